"""The table binning gives exactly the asinh formula's bins, including values on bin edges and outside the range."""

from __future__ import annotations

import pytest
import torch

from workbench.activations import HarvestConfig
from workbench.histograms import bin_counts, bin_index, bin_table


def _formula_counts(rows: torch.Tensor, n_bins: int, max_abs: float, scale: float) -> torch.Tensor:
    index = bin_index(rows, n_bins, max_abs, scale).long()
    return torch.stack([torch.bincount(column, minlength=n_bins + 2) for column in index.T])


@pytest.mark.parametrize(("n_bins", "max_abs", "scale"), [(256, 100.0, 0.05), (512, 1e4, 0.05), (64, 100.0, 0.05)])
def test_table_counts_equal_the_formula_counts(n_bins, max_abs, scale):
    generator = torch.Generator().manual_seed(n_bins)
    spread = torch.logspace(-3, 3, 64)
    rows = torch.randn(3000, 64, generator=generator) * spread - 0.2 * spread
    edges = HarvestConfig(histogram_bins=n_bins, histogram_max_abs=max_abs, histogram_scale=scale).bin_edges()
    on_edges = torch.cat([edges, edges.nextafter(torch.tensor(float("inf"), dtype=edges.dtype)),
                          edges.nextafter(torch.tensor(float("-inf"), dtype=edges.dtype))]).float()
    special = torch.tensor([0.0, -0.0, 1e-40, -1e-40, max_abs, -max_abs, 2 * max_abs, float("inf"), float("-inf")])
    extra = torch.cat([on_edges, special])
    rows[:len(extra), 0] = extra
    rows[:len(extra), 1] = extra.flip(0)
    counts = bin_counts(rows, n_bins, max_abs, scale)
    assert counts.shape == (64, n_bins + 2) and int(counts.sum()) == rows.numel()
    assert torch.equal(counts, _formula_counts(rows, n_bins, max_abs, scale))
    table = bin_table(n_bins, max_abs, scale)
    spanning = (table < 0).float().mean()
    assert 0 < spanning < 0.01  # a few keys hold an edge; those values take the formula


def test_the_outer_bins_catch_values_beyond_the_range():
    counts = bin_counts(torch.tensor([[-1e6], [-150.0], [150.0], [float("inf")], [0.0]]), 64, 100.0, 0.05)
    assert counts[0, 0] == 2 and counts[0, -1] == 2 and counts[0, 1:-1].sum() == 1
