"""Seeded, document-level assignment of rows to the ``discovery``/``dev``/``eval`` splits.

Every source document (a help page, a UI file of a translation catalog, a UDHR
article, a fortune file, ...) is assigned to one split by hashing the seed and
the document id; every row of that document inherits the split. Because
parallel rows are aligned, the split of a row is the same in every language.
"""

from __future__ import annotations

import hashlib

__all__ = ["SEED", "SPLITS", "SPLIT_SHARES", "assign_split", "order_key"]

SEED = "workbench-corpus-v1"
SPLITS: tuple[str, ...] = ("discovery", "dev", "eval")
SPLIT_SHARES: tuple[float, ...] = (0.6, 0.2, 0.2)


def _unit_interval(*parts: str) -> float:
    """A deterministic pseudo-random number in [0, 1) from the seed and ``parts``."""
    digest = hashlib.sha256("\x1f".join((SEED, *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(doc: str) -> str:
    """The split of source document ``doc`` (60% discovery, 20% dev, 20% eval)."""
    value = _unit_interval("split", doc)
    edge = 0.0
    for split, share in zip(SPLITS, SPLIT_SHARES, strict=True):
        edge += share
        if value < edge:
            return split
    return SPLITS[-1]


def order_key(row_id: str) -> float:
    """Seeded sort key that puts rows in a fixed pseudo-random order (for ``n=``)."""
    return _unit_interval("order", row_id)
