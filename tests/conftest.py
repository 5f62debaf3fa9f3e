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


def devanagari_tokens(model):
    """Vocabulary mask of the tokens holding a Devanagari character (the next-token Hindi mass of the LAPE tests)."""
    from workbench.evaluation.token_sets import vocab_pieces

    pieces = vocab_pieces(model.tokenizer)
    mask = torch.zeros(model.cfg.d_vocab, dtype=torch.bool)
    mask[:len(pieces)] = torch.tensor([any("\u0900" <= c <= "\u097f" for c in piece) for piece in pieces])
    return mask


def tiny_gemma3(tokenizer):
    """A seeded 2-layer Gemma 3 HF model (width 16, 32 neurons per layer) over ``tokenizer``'s vocabulary."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
                              sliding_window=16)
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval()


def save_tiny_gemma3(directory, chat_template: str | None = None):
    """:func:`tiny_gemma3` saved as an HF checkpoint with the embedded model's tokenizer (and ``chat_template``)."""
    from workbench.models import load_tokenizer

    tokenizer = load_tokenizer()
    tiny_gemma3(tokenizer).save_pretrained(directory)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(directory)
    return directory


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


@pytest.fixture
def small_diffmean(monkeypatch):
    """``diffmean`` fitted on fewer rows than its default (96 parallel rows, Hindi as the only negative): one cheap
    harvest per target in the shared cache, read by every real-model test that steers with DiffMean."""
    from functools import partial

    import workbench.methods
    from workbench.directions import DirectionDataConfig
    from workbench.methods import DirectionMethod

    factory = partial(DirectionMethod, "diffmean", "diffmean", data=DirectionDataConfig(n_rows=96, negatives=("hi",)))
    monkeypatch.setitem(workbench.methods._REGISTRY, "diffmean", factory)
    return factory()


@pytest.fixture(scope="session")
def gemma_hf():
    from workbench.models import load_hf_model

    return load_hf_model()
