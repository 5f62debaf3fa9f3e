"""Rates with 95% confidence intervals, and the CLaS-Bench steering score.

Binary rates use the Wilson score interval; means of continuous per-prompt values, and the steering score (a
harmonic mean of two per-prompt rates), use a percentile bootstrap over prompts with a fixed seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``(0, 1)`` when ``n == 0``)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(samples: Sequence[np.ndarray | Sequence[float]], statistic: Callable[..., float], *,
                       n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap over items: ``samples`` is one aligned array per input of ``statistic``."""
    columns = [np.asarray(column, dtype=float) for column in samples]
    n = len(columns[0])
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    values = np.array([statistic(*(column[index] for column in columns)) for index in draws])
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def harmonic_mean(a: float, b: float) -> float:
    """Harmonic mean of two rates in [0, 1]; 0 when either is 0 (CLaS-Bench's steering score)."""
    return 0.0 if a <= 0 or b <= 0 else 2 * a * b / (a + b)


def steering_score_from_items(control: np.ndarray, relevant: np.ndarray) -> float:
    """Harmonic mean of the language-control rate and the relevance rate of per-prompt 0/1 outcomes."""
    return harmonic_mean(float(np.mean(control)), float(np.mean(relevant)))


def steering_score_v2_from_items(control: np.ndarray, relevance: np.ndarray, coherent: np.ndarray) -> float:
    """Harmonic mean of the language-control rate and the mean of relevance x coherent over items."""
    return harmonic_mean(float(np.mean(control)), float(np.mean(np.asarray(relevance) * np.asarray(coherent))))
