"""Single-feature ablation study (LangFIR's causal test): per-language change of cross-entropy on held-out text.

For a feature ``j`` of an SAE, the held-out monolingual text of each language is scored (token-weighted mean
next-token CE, nats) with and without :class:`~workbench.features.steer.FeatureAblation` at all positions. The
result per feature is a languages vector ``dCE[lang] = CE_ablated - CE_clean``; a language-specific feature raises
it for its own language only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.activations import TokenBatch
from workbench.backends import Model
from workbench.features.scores import FeatureError
from workbench.features.steer import ABLATION_MODES, FeatureAblation
from workbench.languages import get_language
from workbench.saes.data import corpus_batches
from workbench.saes.io import check_sae_fits
from workbench.saes.quality import token_cross_entropy


@dataclass(frozen=True)
class AblationConfig:
    """How a feature ablation is scored."""

    languages: tuple[str, ...] = ("en", "hi", "es", "zh", "ru", "ar")
    """Languages whose held-out CE change is reported."""
    split: str = "eval"
    """Corpus split of the held-out text."""
    tokens_per_language: int = 400
    """Usable tokens of held-out text per language."""
    max_length: int = 64
    """Tokens per text."""
    mode: str = "zero"
    """``zero``, ``clamp`` (to ``value``) or ``direction`` (LangFIR's directional ablation)."""
    value: float = 0.0
    """Clamp value (``clamp`` mode)."""
    batch_size: int = 16
    """Texts per forward pass."""
    exclude_bos: bool = True
    """Leave the BOS position unedited: the SAEs are trained without it, and its outlier-norm residual makes any
    edit there shift every language's CE alike (hiding a language-specific effect)."""

    def __post_init__(self) -> None:
        if self.mode not in ABLATION_MODES:
            raise FeatureError(f"unknown ablation mode {self.mode!r}; choose one of {', '.join(ABLATION_MODES)}")
        if not self.languages:
            raise FeatureError("name at least one language")
        for code in self.languages:
            get_language(code)
        if self.tokens_per_language < 1:
            raise FeatureError("tokens_per_language must be >= 1")


def language_batches(tokenizer: Any, config: AblationConfig) -> dict[str, list[TokenBatch]]:
    """Held-out token batches per language."""
    return {lang: corpus_batches(tokenizer, [lang], config.split, config.tokens_per_language,
                                 max_length=config.max_length, batch_size=config.batch_size)[0]
            for lang in config.languages}


@dataclass
class AblationResult:
    """CE per language without ablation and its change when each feature is ablated."""

    site: str
    languages: list[str]
    features: list[int]
    ce_clean: Float[Tensor, " lang"]
    delta_ce: Float[Tensor, "feature lang"]
    config: AblationConfig

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "languages": self.languages, "config": asdict(self.config),
                "ce_clean": dict(zip(self.languages, self.ce_clean.tolist(), strict=True)),
                "features": [{"index": f, "delta_ce": dict(zip(self.languages, row, strict=True))}
                             for f, row in zip(self.features, self.delta_ce.tolist(), strict=True)]}


def ablation_study(model: Model, sae: Any, features: Sequence[int], config: AblationConfig | None = None, *,
                   batches: dict[str, list[TokenBatch]] | None = None, ce_clean: Tensor | None = None,
                   progress: bool = True) -> AblationResult:
    """``dCE`` per language for each feature of ``sae`` ablated alone (error term kept).

    ``batches`` / ``ce_clean`` (from an earlier call on the same batches) skip rebuilding / rescoring them.
    """
    config = config or AblationConfig()
    site = check_sae_fits(sae, model)
    if not features:
        raise FeatureError("no features to ablate")
    batches = batches or language_batches(model.tokenizer, config)
    languages = list(batches)
    clean = ce_clean if ce_clean is not None else torch.tensor(
        [token_cross_entropy(model, batches[lang], exclude_bos=False) for lang in languages])
    rows = []
    for feature in tqdm(list(features), desc=f"ablate features at {site.hook_name}", disable=not progress):
        ablation = FeatureAblation(sae, int(feature), mode=config.mode, value=config.value)
        hooks = ablation.hooks(model)
        if config.exclude_bos:
            hooks = [(name, _after_first_position(hook)) for name, hook in hooks]
        rows.append([token_cross_entropy(model, batches[lang], extra_hooks=hooks, exclude_bos=False)
                     for lang in languages])
    delta = torch.tensor(rows) - clean.unsqueeze(0)
    return AblationResult(site.hook_name, languages, [int(f) for f in features], clean, delta, config)


def _after_first_position(hook_fn: Any) -> Any:
    """``hook_fn`` applied from column 1 on (the rows of the ablation batches start with BOS)."""

    def hook(activation: Tensor, hook: Any) -> Tensor:
        edited = activation.clone()
        edited[:, 1:] = hook_fn(activation[:, 1:], hook)
        return edited

    return hook
