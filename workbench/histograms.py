"""Per-unit histogram counts on asinh-spaced bins, read from a lookup table instead of computing ``asinh``.

The bin of ``x`` is ``floor((asinh(x / s) + L) * n / (2 L)) + 1`` clamped to ``[0, n + 1]``, with
``L = asinh(max_abs / s)``: index 0 is the underflow bin, ``n + 1`` the overflow bin (:func:`bin_index`, in float32).
``asinh`` over every activation was most of a histogram's cost, so :func:`bin_counts` reads each bin from a table
indexed by the top :data:`KEY_BITS` bits of the float32 (sign, exponent and 11 mantissa bits). All floats sharing
those bits lie in one interval; where the formula puts both ends of the interval in the same bin, it puts every float
in between there too (it is non-decreasing). The ~0.5% of activations whose interval holds a bin edge, or whose bits
are not a finite number, are binned by the formula itself, so the counts are the formula's exactly.
"""

from __future__ import annotations

from functools import lru_cache

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

KEY_BITS = 20
"""Leading float32 bits that index the bin table (a 4 MiB int32 table)."""
_SHIFT = 32 - KEY_BITS
_KEY_MASK = (1 << KEY_BITS) - 1
_SPANS_AN_EDGE = -1


def bin_index(values: Float[Tensor, "*shape"], n_bins: int, max_abs: float, scale: float) -> Int[Tensor, "*shape"]:
    """The bin of each value by the formula (0: underflow, ``n_bins + 1``: overflow), as int32."""
    limit = torch.asinh(torch.tensor(max_abs / scale)).item()  # in float32, as the bins were always computed
    position = torch.asinh(values.float() / scale)
    position.add_(limit).mul_(n_bins / (2 * limit)).floor_().clamp_(-1, n_bins).add_(1)
    return position.to(torch.int32)


@lru_cache(maxsize=8)
def bin_table(n_bins: int, max_abs: float, scale: float) -> Int[Tensor, " keys"]:
    """The bin of every float32 whose top :data:`KEY_BITS` bits are the index, or -1 where those floats span a bin
    edge or include a non-finite value."""
    keys = torch.arange(1 << KEY_BITS, dtype=torch.int64) << _SHIFT
    low = torch.where(keys >= 1 << 31, keys - (1 << 32), keys).to(torch.int32)  # the bit patterns, as int32
    high = low | ((1 << _SHIFT) - 1)
    low_values, high_values = low.view(torch.float32), high.view(torch.float32)
    low_bins, high_bins = (bin_index(v, n_bins, max_abs, scale) for v in (low_values, high_values))
    one_bin = (low_bins == high_bins) & torch.isfinite(low_values) & torch.isfinite(high_values)
    return torch.where(one_bin, low_bins, torch.full_like(low_bins, _SPANS_AN_EDGE))


def bin_counts(rows: Float[Tensor, "n d"], n_bins: int, max_abs: float, scale: float) -> Int[Tensor, "d bins"]:
    """Per-unit counts over the ``n_bins`` inner bins plus the underflow (first) and overflow (last) bin."""
    rows = rows.float().contiguous()
    width = rows.shape[1]
    keys = rows.view(torch.int32).bitwise_right_shift(_SHIFT).bitwise_and_(_KEY_MASK)
    index = bin_table(n_bins, max_abs, scale).index_select(0, keys.view(-1))
    spanning = (index == _SPANS_AN_EDGE).nonzero().squeeze(1)
    if len(spanning):
        index[spanning] = bin_index(rows.view(-1)[spanning], n_bins, max_abs, scale)
    index = index.view(rows.shape).add_(torch.arange(0, width * (n_bins + 2), n_bins + 2, dtype=torch.int32))
    counts = torch.bincount(index.view(-1), minlength=width * (n_bins + 2))
    return einops.rearrange(counts, "(d bins) -> d bins", d=width)
