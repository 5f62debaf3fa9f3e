"""Artifacts of a transfer study: ``results.csv``, ``items.csv`` (per-item scores), ``leaderboard.md``,
``config.json`` and figures (HTML and PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from workbench.artifacts import atomic_write_json, atomic_write_text
from workbench.plots import language_colour, style
from workbench.static_export import write_static
from workbench.transfer.compare import ITEM_COLUMNS, ITEMS_FILE
from workbench.transfer.study import TransferConfig, TransferResult, TransferRow

__all__ = ["gap_figure", "leaderboard", "score_figure", "write_transfer"]

_TABLES = {"module": (("accuracy", ("english_accuracy", "transfer_gap", "majority_share")),
                      ("balanced_accuracy", ("english_balanced_accuracy",))),
           "translate": (("chrf", ("bleu",)),)}
"""Per task, the leaderboard's tables: the scored metric and the per-language rows shown under it; the first
metric is the task's headline."""


def _frame(rows: Sequence[TransferRow]) -> pd.DataFrame:
    return pd.DataFrame([asdict(row) for row in rows])


def _cell(row: Any, signed: bool = False) -> str:
    """``value [low, high]`` of a frame row (a Series or an itertuples row)."""
    value = f"{row.value:+.3f}" if signed else f"{row.value:.3f}"
    return f"{value} [{row.ci_low:.3f}, {row.ci_high:.3f}]"


def _method_lines(block: pd.DataFrame, metric: str, languages: Sequence[str]) -> list[str]:
    """One table line per method: the score and its change against none, per language."""
    lines = []
    for method in dict.fromkeys(block.method):
        cells = []
        for language in languages:
            score = block[(block.method == method) & (block.language == language) & (block.metric == metric)]
            change = block[(block.method == method) & (block.language == language)
                           & (block.metric == f"delta_{metric}")]
            cell = _cell(score.iloc[0]) if len(score) else "—"
            if len(change):
                cell += f"; Δ {_cell(change.iloc[0], signed=True)}"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def leaderboard(rows: Sequence[TransferRow]) -> str:
    """Markdown: per task and adaptation, each scored metric (module: accuracy and balanced accuracy; translate:
    chrF) and its change against no intervention for every method and language (value [95% CI], n per language),
    with English accuracy, the transfer gap and the majority share (or BLEU) under it."""
    frame = _frame(rows)
    parts = ["# Cross-lingual transfer", ""]
    for (task, adaptation), block in frame.groupby(["task", "adaptation"], sort=False):
        languages = list(dict.fromkeys(block.language))
        n = {language: int(block[block.language == language].n.iloc[0]) for language in languages}
        parts += [f"## {task}, adaptation: {adaptation}", ""]
        for metric, extras in _TABLES[task]:
            if not (block.metric == metric).any():
                continue
            parts += [f"{metric}:", "",
                      "| method | " + " | ".join(f"{language} (n={n[language]})" for language in languages) + " |",
                      "|---|" + "---|" * len(languages)]
            parts += _method_lines(block, metric, languages)
            for extra in extras:
                chosen = block[block.metric == extra]
                if len(chosen):
                    by_language = {row.language: _cell(row, signed=extra == "transfer_gap")
                                   for row in chosen.itertuples()}
                    parts.append(f"| *{extra}* | " + " | ".join(by_language.get(language, "—")
                                                               for language in languages) + " |")
            parts.append("")
        settings = block[block.setting != ""].drop_duplicates(["method", "language"])
        if len(settings):
            parts += ["", "Settings chosen on dev and row sources:", ""]
            parts += [f"- {row.method} / {row.language}: {row.setting}" for row in settings.itertuples()]
        parts.append("")
    return "\n".join(parts)


def score_figure(rows: Sequence[TransferRow], task: str, metric: str | None = None) -> go.Figure:
    """``metric`` (default: the task's headline, accuracy or chrF) per language (x) for each method (bars), with 95%
    intervals."""
    metric = metric or _TABLES[task][0][0]
    frame = _frame(rows)
    frame = frame[(frame.task == task) & (frame.metric == metric)]
    figure = go.Figure()
    for method, block in frame.groupby("method", sort=False):
        figure.add_bar(x=block.language, y=block.value, name=method,
                       error_y={"type": "data", "symmetric": False, "array": block.ci_high - block.value,
                                "arrayminus": block.value - block.ci_low})
    figure.update_layout(barmode="group", title=f"{task}: {metric} per language, with and without each "
                         "intervention", xaxis_title="target language", yaxis_title=metric)
    return style(figure)


def gap_figure(rows: Sequence[TransferRow]) -> go.Figure:
    """English minus target accuracy on identical rows, per language, with paired 95% intervals."""
    frame = _frame(rows)
    frame = frame[frame.metric == "transfer_gap"]
    figure = go.Figure(go.Bar(x=frame.language, y=frame.value,
                              marker_color=[language_colour(code) for code in frame.language],
                              error_y={"type": "data", "symmetric": False, "array": frame.ci_high - frame.value,
                                       "arrayminus": frame.value - frame.ci_low}))
    figure.update_layout(title="Transfer gap: English accuracy minus target accuracy on the same rows",
                         xaxis_title="target language", yaxis_title="accuracy gap")
    return style(figure)


def write_transfer(result: TransferResult, config: TransferConfig, out_dir: str | Path) -> Path:
    """Write every artifact of a study to ``out_dir``; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = result.rows
    frame = _frame(rows)
    atomic_write_text(out / "results.csv", frame.to_csv(index=False))
    atomic_write_text(out / ITEMS_FILE, pd.DataFrame([asdict(item) for item in result.items],
                                                        columns=ITEM_COLUMNS).to_csv(index=False))
    atomic_write_text(out / "leaderboard.md", leaderboard(rows))
    atomic_write_json(out / "config.json", asdict(config))
    figures = {f"{config.task}_scores": score_figure(rows, config.task)}
    if (frame.metric == "balanced_accuracy").any():
        figures[f"{config.task}_balanced_accuracy"] = score_figure(rows, config.task, "balanced_accuracy")
    if (frame.metric == "transfer_gap").any():
        figures["transfer_gap"] = gap_figure(rows)
    for name, figure in figures.items():
        figure.write_html(out / f"{name}.html", include_plotlyjs="cdn")
        write_static(figure, out / f"{name}.png")
    return out
