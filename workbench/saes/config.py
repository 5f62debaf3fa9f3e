"""Configs and errors of the SAE stage: what is trained, on which tokens, and how it is evaluated."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from workbench.errors import WorkbenchError

ARCHITECTURES: tuple[str, ...] = ("topk", "jumprelu", "standard")
"""SAELens training architectures the workbench drives: TopK, JumpReLU (L0 via a straight-through estimator) and
``standard`` (ReLU with an L1 penalty)."""

DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "hi", "es", "zh", "ja", "ru", "ar", "de", "fr")
"""Languages whose shipped monolingual text the SAEs are trained and evaluated on (equal token budgets)."""

ABLATION_BASELINES: tuple[str, ...] = ("zero", "mean")


class SAEError(WorkbenchError):
    """An SAE that does not fit the model (hook, width), a bad training/eval setting, or missing data."""


LATER_FIELDS: dict[str, Any] = {"expansion_factor": None, "qa_share": 0.0}
""":class:`SAETrainConfig` fields added after the first cached SAEs, with their defaults."""


@dataclass(frozen=True)
class SAETrainConfig:
    """How one SAE per site is trained with SAELens on activations of the shipped corpus.

    The defaults are the ones measured on Gemma 3 270M on 2 CPU cores (see the module docs of
    :mod:`workbench.saes.training`): a residual or ``hook_mlp_out`` site (width 640) trains in ~2-4 minutes.
    """

    architecture: str = "topk"
    """``topk`` (default), ``jumprelu`` or ``standard`` (L1)."""
    d_sae: int = 2048
    """Number of latents (3.2x a 640-wide site; 4096 left ~55% of latents dead at this training budget)."""
    expansion_factor: float | None = None
    """When set, the width is ``round(expansion_factor x d_in)`` of each site and ``d_sae`` is ignored."""
    k: int = 32
    """TopK: active latents per token."""
    l1_coefficient: float = 2.0
    """standard: weight of the (decoder-norm weighted) L1 penalty, on activations normalised to norm sqrt(d_in)
    (measured at layer 6, 240k samples: 2 -> L0 ~230, FVU 0.27; 10 -> L0 70, FVU 0.71: L1 shrinkage)."""
    l0_coefficient: float = 0.1
    """jumprelu: weight of the L0 (step) penalty (measured at layer 6, 240k samples: 0.1 -> L0 ~48, FVU 0.10;
    0.05 -> L0 ~73, FVU 0.07)."""
    jumprelu_init_threshold: float = 0.01
    """jumprelu: initial threshold of every latent."""
    jumprelu_bandwidth: float = 0.05
    """jumprelu: bandwidth of the straight-through pseudo-gradient."""
    jumprelu_ste_to_input: bool = True
    """jumprelu: let the L0 pseudo-gradient reach the pre-activations (Anthropic's setup). With it off
    (DeepMind's), only the thresholds move, by at most ~lr per step: too slow to sparsify in a few hundred steps."""
    n_tokens: int = 60_000
    """Distinct tokens harvested into the in-memory buffer (split equally over ``languages``); 60k tokens x 4
    epochs gave the same held-out FVU as 120k x 2 at layer 6."""
    training_samples: int = 240_000
    """Training samples drawn from the buffer (several epochs over it, reshuffled each epoch)."""
    batch_size: int = 512
    """Activations per optimiser step."""
    lr: float = 1e-3
    """Adam learning rate (constant, then linear decay to 0 over the last ``lr_decay_fraction`` of the steps)."""
    lr_decay_fraction: float = 0.2
    """Fraction of the steps over which the learning rate decays linearly to 0."""
    lr_warm_up_steps: int = 20
    """Linear warm-up steps."""
    dead_feature_window: int = 50
    """Steps without firing after which a latent counts as dead (TopK's auxiliary loss revives those)."""
    normalize_activations: str = "expected_average_only_in"
    """SAELens input normalisation during training (folded into the weights when training ends)."""
    b_dec_init: str = "mean"
    """Initial decoder bias: the data ``mean`` (recommended) or ``zero`` (SAELens' default)."""
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    """Languages of the monolingual training text."""
    qa_share: float = 0.0
    """Share of each language's token budget taken from question/answer contexts (``Q: <English question>\nA:
    <answer in the language>``, :func:`workbench.corpus.qa_pairs`): the format the steered prompts have."""
    split: str = "discovery"
    """Corpus split of the training text."""
    max_length: int = 128
    """Tokens per text (BOS included); longer texts are truncated."""
    text_batch_size: int = 16
    """Texts per forward pass while harvesting."""
    exclude_bos: bool = True
    """Leave BOS positions out of the training data (their residual norm is an outlier shared by every text)."""
    max_buffer_gib: float = 8.0
    """Keep at most this many GiB of float32 activations (all sites together) in memory; a larger buffer goes to
    memory-mapped files beside the SAEs being trained (deleted afterwards; refused early if the disk lacks room),
    from which each site that fits this limit is read back into memory for its own training. It does not change the
    SAEs."""
    seed: int = 0
    """Seed of the SAE initialisation and the buffer shuffling."""
    device: str = "cpu"
    """Device the SAEs are trained on."""

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise SAEError(f"unknown SAE architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.d_sae < 1 or self.k < 1 or (self.architecture == "topk" and self.k > self.d_sae):
            raise SAEError(f"need d_sae >= 1 and 1 <= k <= d_sae, got d_sae={self.d_sae}, k={self.k}")
        if self.expansion_factor is not None and not self.expansion_factor > 0:
            raise SAEError(f"expansion_factor must be > 0, got {self.expansion_factor}")
        if not 0.0 <= self.qa_share <= 1.0:
            raise SAEError(f"qa_share must be in [0, 1], got {self.qa_share}")
        if self.n_tokens < self.batch_size:
            raise SAEError(f"n_tokens ({self.n_tokens}) must be at least one batch ({self.batch_size})")
        if self.training_samples < self.batch_size:
            raise SAEError(f"training_samples ({self.training_samples}) must be at least one batch ({self.batch_size})")
        if not 0.0 <= self.lr_decay_fraction < 1.0 or self.lr <= 0:
            raise SAEError("need lr > 0 and 0 <= lr_decay_fraction < 1")
        if not self.languages:
            raise SAEError("languages must name at least one language")
        if self.b_dec_init not in ("mean", "zero"):
            raise SAEError(f"b_dec_init must be 'mean' or 'zero', got {self.b_dec_init!r}")
        if self.normalize_activations not in ("none", "expected_average_only_in"):
            raise SAEError("normalize_activations must be 'none' or 'expected_average_only_in' (folded after training)")
        from workbench.languages import get_language

        for code in self.languages:
            get_language(code)

    def width(self, d_in: int) -> int:
        """Latents of an SAE on a site of width ``d_in`` (``expansion_factor x d_in``, else ``d_sae``)."""
        width = round(self.expansion_factor * d_in) if self.expansion_factor is not None else self.d_sae
        if self.architecture == "topk" and self.k > width:
            raise SAEError(f"k={self.k} exceeds the {width} latents of an SAE on a width-{d_in} site")
        return width

    @property
    def total_steps(self) -> int:
        return self.training_samples // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """The settings (JSON-ready). Fields added after SAEs were first cached are left out at their defaults, so
        those cache entries keep their keys."""
        payload = asdict(self)
        for name, default in LATER_FIELDS.items():
            if payload[name] == default:
                del payload[name]
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> SAETrainConfig:
        fields = dict(payload)
        fields["languages"] = tuple(fields.get("languages", DEFAULT_LANGUAGES))
        return cls(**fields)


@dataclass(frozen=True)
class SAEEvalConfig:
    """How an SAE's quality is measured on held-out text."""

    split: str = "dev"
    """Corpus split of the held-out text (disjoint from the training split)."""
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    """Languages of the held-out text."""
    n_tokens: int = 16_000
    """Held-out tokens for FVU, L0 and the dead-latent share (split equally over the languages)."""
    ce_tokens_per_language: int = 256
    """Held-out tokens per language for the cross-entropy splice test."""
    ce_max_length: int = 64
    """Tokens per text in the splice test."""
    baselines: tuple[str, ...] = ABLATION_BASELINES
    """Ablation baselines CE recovery is reported against: ``zero`` and/or ``mean`` (mean of the held-out
    activations at the site)."""
    exclude_bos: bool = True
    """Leave BOS positions out of the metrics, and neither splice nor ablate at them."""
    max_length: int = 128
    """Tokens per text for the FVU harvest."""
    text_batch_size: int = 16
    """Texts per forward pass."""

    def __post_init__(self) -> None:
        unknown = [b for b in self.baselines if b not in ABLATION_BASELINES]
        if unknown or not self.baselines:
            raise SAEError(f"unknown ablation baseline(s) {unknown}; choose from {', '.join(ABLATION_BASELINES)}")
        if self.n_tokens < 1 or self.ce_tokens_per_language < 1:
            raise SAEError("n_tokens and ce_tokens_per_language must be >= 1")
        from workbench.languages import get_language

        for code in self.languages:
            get_language(code)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
