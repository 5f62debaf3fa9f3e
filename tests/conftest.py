"""Shared fixtures: tiny HookedTransformers built in the test, and the real embedded model loaded once per session.

Everything runs offline: HF_HUB_OFFLINE is set before any model code is imported.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402


def make_tiny_cfg(**overrides) -> HookedTransformerConfig:
    """A 2-layer gated-MLP transformer config (Gemma-like: RMSNorm, gated GELU MLP, rotary)."""
    fields = dict(n_layers=2, d_model=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=64, n_ctx=32,
                  act_fn="gelu_pytorch_tanh", gated_mlp=True, normalization_type="RMS",
                  positional_embedding_type="rotary", seed=0)
    fields.update(overrides)
    return HookedTransformerConfig(**fields)


@pytest.fixture
def tiny_model() -> HookedTransformer:
    torch.manual_seed(0)
    return HookedTransformer(make_tiny_cfg()).eval()


@pytest.fixture(scope="session")
def gemma_hooked():
    from workbench.models import load_model

    return load_model(backend="hooked")


@pytest.fixture(scope="session")
def gemma_bridge():
    from workbench.models import load_model

    return load_model(backend="bridge")


@pytest.fixture(scope="session")
def gemma_fast():
    """The ``hf`` backend: HF forward with TL hook points at residual and MLP sites."""
    from workbench.models import load_model

    return load_model(backend="hf")


@pytest.fixture(scope="session")
def gemma_hf():
    from workbench.models import load_hf_model

    return load_hf_model()
