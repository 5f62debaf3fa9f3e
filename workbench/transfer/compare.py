"""Two transfer runs compared item by item: the same eval rows scored by, say, LoRA masked to the target's LAPE
neurons and LoRA masked to random neurons, so the difference gets a paired bootstrap interval rather than two
overlapping ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.artifacts import atomic_write_text
from workbench.evaluation.scores import bootstrap_interval
from workbench.transfer.study import TransferError, TransferItem

__all__ = ["ITEMS_FILE", "ITEM_COLUMNS", "ComparisonRow", "compare_items", "compare_runs", "comparison_table",
           "read_items", "write_comparison"]

ITEMS_FILE = "items.csv"
"""The per-item scores a transfer run writes beside ``results.csv``."""
ITEM_COLUMNS = [field.name for field in fields(TransferItem)]
"""Its columns."""

_KEY = ("task", "method", "language", "metric")


@dataclass(frozen=True)
class ComparisonRow:
    """One paired difference between two runs on the same items."""

    task: str
    """``module`` or ``translate``."""
    method: str
    """The intervention (both runs)."""
    language: str
    """The target language."""
    metric: str
    """``accuracy``, ``english_accuracy`` or ``chrf``."""
    first: str
    """The first run's adaptation (and label)."""
    second: str
    """The second run's adaptation (and label)."""
    first_value: float
    """The first run's mean over the shared items."""
    second_value: float
    """The second run's mean over the same items."""
    difference: float
    """``first_value - second_value``."""
    ci_low: float
    """95% paired bootstrap interval of the difference, low end."""
    ci_high: float
    """95% paired bootstrap interval of the difference, high end."""
    n: int
    """Items both runs scored."""


def read_items(path: str | Path) -> list[TransferItem]:
    """The per-item scores of a run directory (or of its ``items.csv``)."""
    file = Path(path)
    file = file / ITEMS_FILE if file.is_dir() else file
    if not file.is_file():
        raise TransferError(f"{file} does not exist; point at a directory written by `workbench transfer` (runs "
                            "before per-item scores were stored have none: rerun them)")
    frame = pd.read_csv(file, dtype={"item": str}, keep_default_na=False)
    if list(frame.columns) != ITEM_COLUMNS:
        raise TransferError(f"{file} has columns {list(frame.columns)}; a transfer items file has {ITEM_COLUMNS}")
    return [TransferItem(*row) for row in frame.itertuples(index=False)]


def _by_key(items: Sequence[TransferItem]) -> dict[tuple[str, ...], dict[str, float]]:
    grouped: dict[tuple[str, ...], dict[str, float]] = {}
    for item in items:
        grouped.setdefault(tuple(getattr(item, name) for name in _KEY), {})[item.item] = item.score
    return grouped


def _label(items: Sequence[TransferItem], label: str | None) -> str:
    adaptations = sorted({item.adaptation for item in items})
    return label or "+".join(adaptations)


def compare_items(first: Sequence[TransferItem], second: Sequence[TransferItem], *, first_label: str | None = None,
                  second_label: str | None = None, n_bootstrap: int = 1000) -> list[ComparisonRow]:
    """Paired differences (first minus second) for every (task, method, language, metric) both runs scored, over
    the items both scored; refuses runs with nothing in common."""
    left, right = _by_key(first), _by_key(second)
    shared = [key for key in left if key in right and set(left[key]) & set(right[key])]
    if not shared:
        raise TransferError("the two runs share no (task, method, language, metric) with common items; compare runs "
                            "of the same task on the same targets")
    names = _label(first, first_label), _label(second, second_label)
    rows = []
    for key in shared:
        ids = [item for item in left[key] if item in right[key]]
        a = np.asarray([left[key][item] for item in ids])
        b = np.asarray([right[key][item] for item in ids])
        low, high = bootstrap_interval([a, b], lambda x, y: float(np.mean(x) - np.mean(y)), n_resamples=n_bootstrap)
        rows.append(ComparisonRow(*key, *names, first_value=float(a.mean()), second_value=float(b.mean()),
                                  difference=float(a.mean() - b.mean()), ci_low=low, ci_high=high, n=len(ids)))
    return rows


def compare_runs(first_dir: str | Path, second_dir: str | Path, *, n_bootstrap: int = 1000) -> list[ComparisonRow]:
    """:func:`compare_items` of two run directories, each labelled by its adaptation and directory name."""
    first, second = read_items(first_dir), read_items(second_dir)
    return compare_items(first, second, first_label=f"{_label(first, None)} ({Path(first_dir).name})",
                         second_label=f"{_label(second, None)} ({Path(second_dir).name})", n_bootstrap=n_bootstrap)


def comparison_table(rows: Sequence[ComparisonRow]) -> str:
    """Markdown: one line per compared score, the difference with its paired 95% interval."""
    if not rows:
        return ""
    lines = [f"# {rows[0].first} minus {rows[0].second}", "",
             "| task | method | language | metric | first | second | difference [95% CI] | n |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {row.task} | {row.method} | {row.language} | {row.metric} | {row.first_value:.3f} | "
              f"{row.second_value:.3f} | {row.difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}] | {row.n} |"
              for row in rows]
    return "\n".join(lines) + "\n"


def write_comparison(rows: Sequence[ComparisonRow], out_dir: str | Path) -> Path:
    """``comparison.csv`` and ``comparison.md`` in ``out_dir``; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.csv", pd.DataFrame([asdict(row) for row in rows]).to_csv(index=False))
    atomic_write_text(out / "comparison.md", comparison_table(rows))
    return out
