"""FOXP2 stage II: the spectral low-rank analysis of English->target activation differences (pure functions).

Per layer, the difference matrix ``D = Z_tgt - Z_en`` holds one row per parallel pair (each sentence's
representation, e.g. its mean residual over tokens, in residual or SAE-feature space). Its singular values give:

* effective rank ``r_eff = ceil(exp(H(p)))`` with ``p = s^2 / sum s^2``;
* eigengap rank ``r_gap = argmax_i s_i / s_{i+1}`` over the first ``max_gap_rank`` gaps (1-based: ``r_gap`` = 1
  when the largest gap follows the first value);
* the chosen rank ``r = max(1, min(r_eff, r_gap))`` and the captured mass ``sum_{i<=r} s_i^2 / sum s^2``;
* stability: the median, over bootstrap resamples of the pairs, of the overlap ``tr(P_a P_b) / r`` of the rank-r
  subspaces of two independent resamples (1 = identical, ``r / d`` expected for random subspaces).

``D`` is not centred: its leading direction carries the mean difference of the languages (DiffMean), which is
what steering uses. Null models of the same shape: *shuffled pairing* (target rows permuted, so the content no
longer matches), *content contrast* (English rows minus other English rows: a difference with no language change)
and *random support* (the mass a random rank-r subspace captures). The intervention window is the contiguous run
of layers, between ``min_width`` and ``max_width`` long, maximising the sum of ``mass x stability - its mean over
layers``: every layer above the average adds to the window, every layer below it costs.

Scores that can separate a layer from chance (the uncentred mass cannot: a large mean offset makes rank 1 capture
almost everything for real and shuffled pairs alike):

* :func:`centred_mass`: the captured mass of ``D`` after removing its mean row, at the rank its own spectrum
  chooses; compared with the same on a centred null (:func:`centred_mass` of the shuffled pairing at that rank),
  it measures how much of the pair-to-pair variation of the language change is low-rank *because the pairs
  match*;
* :func:`fisher_ratio`: ``|mean(Z_tgt) - mean(Z_en)|^2 / tr(S_w)`` with ``S_w`` the average of the two
  languages' covariances (how far the language means are apart in units of the within-language spread); its null,
  :func:`swapped_sides`, swaps each pair's two rows at random, so the language labels carry no information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import WorkbenchError


class SpectralError(WorkbenchError):
    """Bad input to the spectral analysis (shapes, too few pairs, impossible window bounds)."""


WINDOW_SCORES: dict[str, str] = {"fisher": "fisher", "mass-excess": "mass_excess", "mass-x-stability": "score"}
"""Per-layer scores a window can be chosen by -> their column in a stage II frame: the Fisher ratio, the centred
mass minus the centred shuffled-pairing mass, and the paper-literal captured mass x stability."""


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of the per-layer spectral analysis and the window choice."""

    max_gap_rank: int = 12
    """Eigengaps considered: ``s_i / s_{i+1}`` for i = 1..max_gap_rank."""
    n_bootstrap: int = 32
    """Bootstrap resample pairs for the stability."""
    min_width: int = 3
    """Shortest intervention window (layers)."""
    max_width: int = 12
    """Longest intervention window (layers)."""
    seed: int = 0
    """Seed of the bootstrap resamples and of the null models."""
    window_score: str = "fisher"
    """The score stage II's own window maximises (one of :data:`WINDOW_SCORES`; ``mass-x-stability`` is the
    paper-literal choice). Every score's window is reported, and FOXP2 chooses among them on dev."""

    def __post_init__(self) -> None:
        if self.window_score not in WINDOW_SCORES:
            raise SpectralError(f"unknown window_score {self.window_score!r}; use one of {', '.join(WINDOW_SCORES)}")
        if self.max_gap_rank < 1 or self.n_bootstrap < 1:
            raise SpectralError("max_gap_rank and n_bootstrap must be >= 1")
        if not 1 <= self.min_width <= self.max_width:
            raise SpectralError(f"need 1 <= min_width <= max_width, got {self.min_width} and {self.max_width}")


def difference_matrix(target: Float[Tensor, "pair d"], english: Float[Tensor, "pair d"]) -> Float[Tensor, "pair d"]:
    """``Z_tgt - Z_en``, one row per parallel pair (rows must be aligned)."""
    if target.shape != english.shape or target.ndim != 2:
        raise SpectralError(f"target and English representations must be (pair, d) of one shape, got "
                            f"{tuple(target.shape)} and {tuple(english.shape)}")
    if target.shape[0] < 2:
        raise SpectralError(f"need at least 2 pairs, got {target.shape[0]}")
    return (target.double() - english.double()).float()


def singular_values(difference: Float[Tensor, "pair d"]) -> Float[Tensor, " k"]:
    """Singular values, largest first (computed in float64)."""
    return torch.linalg.svdvals(difference.double()).float()


def _energy(values: Tensor) -> Tensor:
    squares = values.double() ** 2
    total = squares.sum()
    if total <= 0:
        raise SpectralError("the difference matrix is zero: the two sides are identical")
    return squares / total


def effective_rank(values: Float[Tensor, " k"]) -> int:
    """``ceil(exp(H(s^2 / sum s^2)))`` (a rounding tolerance keeps exact integers from rounding up)."""
    energy = _energy(values)
    entropy = -(energy[energy > 0] * energy[energy > 0].log()).sum()
    return max(1, math.ceil(float(entropy.exp()) - 1e-9))


def eigengap_rank(values: Float[Tensor, " k"], max_rank: int = 12) -> int:
    """``argmax_i s_i / s_{i+1}`` over i = 1..max_rank (1-based), skipping gaps into exact zeros."""
    values = values.double()
    usable = min(max_rank, values.numel() - 1)
    if usable < 1:
        return 1
    ratios = values[:usable] / values[1:usable + 1]
    ratios = torch.where(values[1:usable + 1] > 0, ratios, torch.zeros_like(ratios))
    return int(ratios.argmax()) + 1 if bool((ratios > 0).any()) else 1


def chosen_rank(values: Float[Tensor, " k"], max_gap_rank: int = 12) -> int:
    """``max(1, min(r_eff, r_gap))``."""
    return max(1, min(effective_rank(values), eigengap_rank(values, max_gap_rank)))


def captured_mass(values: Float[Tensor, " k"], rank: int) -> float:
    """Share of ``sum s^2`` in the first ``rank`` singular values."""
    return float(_energy(values)[:rank].sum())


def top_subspace(difference: Float[Tensor, "pair d"], rank: int) -> Float[Tensor, "d rank"]:
    """Orthonormal basis of the top-``rank`` right singular vectors (the directions in activation space), largest
    first.

    They come from the smaller Gram matrix (``D^T D``, or ``D D^T`` mapped back through ``D^T`` when there are fewer
    rows than dimensions), and LAPACK's ``evr`` driver computes only its top eigenvectors: in float64 this took 59 ms
    against a full SVD's 147 ms for a (768, 640) matrix (the bootstrap calls it 64 times per spectrum), and the
    subspaces agree to float32 precision (overlap within 2e-9 of 1) where the top values are separated from the rest.
    """
    import scipy.linalg

    n_rows, width = difference.shape
    if not 1 <= rank <= min(n_rows, width):
        raise SpectralError(f"rank must lie in 1..{min(n_rows, width)}, got {rank}")
    matrix = difference.double()
    by_columns = n_rows >= width
    gram = (matrix.T @ matrix if by_columns else matrix @ matrix.T).numpy()
    size = gram.shape[0]
    _, vectors = scipy.linalg.eigh(gram, subset_by_index=[size - rank, size - 1], driver="evr")
    vectors = torch.from_numpy(vectors[:, ::-1].copy())
    if not by_columns:  # left singular vectors u_i -> right ones D^T u_i / s_i
        vectors = matrix.T @ vectors
        vectors = vectors / vectors.norm(dim=0, keepdim=True)
    return vectors.float()


def subspace_overlap(a: Float[Tensor, "d rank"], b: Float[Tensor, "d rank"]) -> float:
    """``tr(P_a P_b) / r`` for orthonormal bases: 1 for the same subspace, ~r/d for random ones."""
    if a.shape != b.shape:
        raise SpectralError(f"bases of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a.double().T @ b.double()).pow(2).sum() / a.shape[1])


def bootstrap_stability(difference: Float[Tensor, "pair d"], rank: int, n_bootstrap: int = 32,
                        generator: torch.Generator | None = None) -> float:
    """Median over ``n_bootstrap`` pairs of independent row resamples of their rank-r subspace overlap."""
    n_rows = difference.shape[0]
    overlaps = []
    for _ in range(n_bootstrap):
        first = torch.randint(n_rows, (n_rows,), generator=generator)
        second = torch.randint(n_rows, (n_rows,), generator=generator)
        overlaps.append(subspace_overlap(top_subspace(difference[first], rank), top_subspace(difference[second], rank)))
    return float(torch.tensor(overlaps).median())


def random_support_mass(difference: Float[Tensor, "pair d"], rank: int,
                        generator: torch.Generator | None = None) -> float:
    """Share of ``||D||_F^2`` a random rank-``rank`` subspace captures (the random-support null)."""
    basis, _ = torch.linalg.qr(torch.randn(difference.shape[1], rank, generator=generator, dtype=torch.float64))
    projected = difference.double() @ basis
    return float(projected.pow(2).sum() / difference.double().pow(2).sum())


@dataclass(frozen=True)
class LayerSpectrum:
    """The spectral summary of one layer's difference matrix."""

    values: Float[Tensor, " k"]
    """Singular values, largest first."""
    effective_rank: int
    eigengap_rank: int
    rank: int
    """``max(1, min(effective_rank, eigengap_rank))``."""
    mass: float
    """Captured mass of the first ``rank`` singular values."""
    stability: float
    """Bootstrap subspace overlap at ``rank``."""


def layer_spectrum(difference: Float[Tensor, "pair d"], config: SpectralConfig = SpectralConfig(),
                   generator: torch.Generator | None = None, rank: int | None = None) -> LayerSpectrum:
    """Ranks, mass and stability of one difference matrix (``rank`` overrides the chosen rank)."""
    values = singular_values(difference)
    chosen = rank if rank is not None else chosen_rank(values, config.max_gap_rank)
    return LayerSpectrum(values=values, effective_rank=effective_rank(values),
                         eigengap_rank=eigengap_rank(values, config.max_gap_rank), rank=chosen,
                         mass=captured_mass(values, chosen),
                         stability=bootstrap_stability(difference, chosen, config.n_bootstrap, generator))


def shuffled_pairing(target: Float[Tensor, "pair d"], english: Float[Tensor, "pair d"],
                     generator: torch.Generator | None = None) -> Float[Tensor, "pair d"]:
    """Null: target rows in a random order (a derangement when possible) minus the English rows."""
    return difference_matrix(target[_derangement(target.shape[0], generator)], english)


def content_contrast(english: Float[Tensor, "pair d"], generator: torch.Generator | None = None
                     ) -> Float[Tensor, "pair d"]:
    """Null: English rows minus other English rows (content changes, language does not)."""
    return difference_matrix(english[_derangement(english.shape[0], generator)], english)


def _derangement(n: int, generator: torch.Generator | None) -> Tensor:
    """A random permutation moving every index (a cyclic shift of a random order)."""
    order = torch.randperm(n, generator=generator)
    result = torch.empty_like(order)
    result[order] = order.roll(1)
    return result


def centred(difference: Float[Tensor, "pair d"]) -> Float[Tensor, "pair d"]:
    """``D`` minus its mean row (the mean language offset removed)."""
    return difference - difference.mean(0, keepdim=True)


def centred_mass(difference: Float[Tensor, "pair d"], rank: int | None = None, max_gap_rank: int = 12
                 ) -> tuple[float, int]:
    """The captured mass of the centred ``D`` and the rank it was taken at (``rank``, or the centred spectrum's
    own chosen rank)."""
    values = singular_values(centred(difference))
    chosen = rank if rank is not None else chosen_rank(values, max_gap_rank)
    return captured_mass(values, chosen), chosen


def fisher_ratio(target: Float[Tensor, "pair d"], english: Float[Tensor, "pair d"]) -> float:
    """``|mean(target) - mean(english)|^2 / tr(S_w)``, ``S_w`` the mean of the two sides' covariance matrices."""
    difference_matrix(target, english)  # shape checks
    target, english = target.double(), english.double()
    between = (target.mean(0) - english.mean(0)).pow(2).sum()
    within = 0.5 * (target.var(0).sum() + english.var(0).sum())
    if within <= 0:
        raise SpectralError("both sides have zero variance: the Fisher ratio is undefined")
    return float(between / within)


def swapped_sides(target: Float[Tensor, "pair d"], english: Float[Tensor, "pair d"],
                  generator: torch.Generator | None = None) -> tuple[Float[Tensor, "pair d"], Float[Tensor, "pair d"]]:
    """Null of the Fisher ratio: each pair's two rows swapped with probability 1/2 (labels without information)."""
    difference_matrix(target, english)
    swap = (torch.rand(target.shape[0], generator=generator) < 0.5).unsqueeze(-1)
    return torch.where(swap, english, target), torch.where(swap, target, english)


def choose_window(score: Float[Tensor, " layer"], min_width: int = 3, max_width: int = 12) -> tuple[int, int]:
    """``(first, last)`` layer of the contiguous window maximising ``sum(score - mean(score))`` within the width
    bounds (ties: the narrower, then the earlier window)."""
    n_layers = score.shape[0]
    if n_layers < min_width:
        raise SpectralError(f"{n_layers} layers cannot hold a window of at least {min_width}")
    centred = score.double() - score.double().mean()
    best, best_key = (0, min_width - 1), None
    for width in range(min_width, min(max_width, n_layers) + 1):
        sums = centred.unfold(0, width, 1).sum(-1)
        start = int(sums.argmax())
        key = float(sums[start])
        if best_key is None or key > best_key + 1e-12:
            best, best_key = (start, start + width - 1), key
    return best
