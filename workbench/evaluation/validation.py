"""Is a relevance metric fit to rank methods? Measure it on human translations before trusting it.

For each language, held-out parallel rows (eval split) give *matched* items (English text, its human translation)
and *shuffled* items (English text, the translation of another row). A scorer that measures relevance must give
matched items higher scores (AUC of matched vs shuffled), and should give a perfect translation the same score
whatever its language (the spread, max - min, of the matched means across languages). The default scorer must
reach AUC >= 0.9 in every language and a spread <= 0.15 (:data:`REQUIRED_AUC`, :data:`MAX_SPREAD`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from jaxtyping import Float
from tqdm.auto import tqdm

from workbench.artifacts import atomic_write_json, atomic_write_text
from workbench.evaluation.encoder import parallel_pairs
from workbench.evaluation.relevance import RelevanceScorer, scorer_description
from workbench.plots import style

VALIDATION_LANGUAGES: tuple[str, ...] = ("hi", "es", "zh", "ar", "de", "fr", "ja", "ko")
REQUIRED_AUC = 0.9
MAX_SPREAD = 0.15


def auc(matched: Float[np.ndarray, " m"], shuffled: Float[np.ndarray, " s"]) -> float:
    """Probability that a matched item outscores a shuffled one (ties count half): the ROC AUC."""
    matched, shuffled = np.asarray(matched, dtype=float), np.asarray(shuffled, dtype=float)
    greater = (matched[:, None] > shuffled[None, :]).mean()
    ties = (matched[:, None] == shuffled[None, :]).mean()
    return float(greater + 0.5 * ties)


@dataclass(frozen=True)
class RelevanceValidationRow:
    """One scorer on one language's held-out pairs."""

    scorer: str
    """Scorer name."""
    language: str
    """Language of the translations."""
    source: str
    """Corpus source of the pairs."""
    n_pairs: int
    """Matched pairs (as many shuffled ones)."""
    auc: float
    """AUC of matched vs shuffled scores."""
    translation_mean: float
    """Mean score of the human translations."""
    shuffled_mean: float
    """Mean score of the shuffled pairs."""


@dataclass(frozen=True)
class RelevanceValidation:
    """Every scorer's rows, with the bar the default must meet."""

    rows: list[RelevanceValidationRow]
    scorers: dict[str, dict]
    """Scorer name -> what its numbers mean."""

    def for_scorer(self, name: str) -> list[RelevanceValidationRow]:
        return [row for row in self.rows if row.scorer == name]

    def spread(self, name: str) -> float:
        """Max - min across languages of the scorer's mean score of human translations."""
        means = [row.translation_mean for row in self.for_scorer(name)]
        return float(max(means) - min(means))

    def passes(self, name: str) -> bool:
        return all(row.auc >= REQUIRED_AUC for row in self.for_scorer(name)) and self.spread(name) <= MAX_SPREAD

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(row) for row in self.rows])

    def summary(self) -> pd.DataFrame:
        """Per scorer: the lowest AUC, the spread and whether it meets the bar."""
        return pd.DataFrame([{"scorer": name, "min_auc": min(row.auc for row in self.for_scorer(name)),
                              "spread": self.spread(name), "passes": self.passes(name)} for name in self.scorers])

    def figure(self) -> go.Figure:
        """AUC and mean translation score per language, one trace per scorer."""
        figure = go.Figure()
        for name in self.scorers:
            rows = self.for_scorer(name)
            figure.add_bar(x=[row.language for row in rows], y=[row.auc for row in rows], name=f"{name}: AUC")
            figure.add_scatter(x=[row.language for row in rows], y=[row.translation_mean for row in rows],
                               mode="markers", marker={"size": 11, "symbol": "diamond"},
                               name=f"{name}: mean translation score")
        figure.add_hline(y=REQUIRED_AUC, line_dash="dot", annotation_text=f"required AUC {REQUIRED_AUC}")
        figure.update_layout(title="Relevance scorers on held-out human translations", barmode="group",
                             yaxis_title="AUC (matched vs shuffled) / mean score", xaxis_title="language")
        return style(figure)

    def write(self, out_dir: str | Path) -> list[Path]:
        """``relevance_validation.csv`` / ``.json`` / ``.html`` (and ``.png`` when the static exporter works)."""
        from workbench.static_export import write_static

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [atomic_write_text(out / "relevance_validation.csv", self.table().to_csv(index=False)),
                 atomic_write_json(out / "relevance_validation.json", {
                     "rows": [asdict(row) for row in self.rows], "scorers": self.scorers,
                     "summary": self.summary().to_dict(orient="records"),
                     "bar": {"required_auc": REQUIRED_AUC, "max_spread": MAX_SPREAD}})]
        figure = self.figure()
        paths.append(atomic_write_text(out / "relevance_validation.html", figure.to_html(include_plotlyjs="cdn")))
        paths.append(write_static(figure, out / "relevance_validation.png"))
        return paths


def validate_relevance(scorers: Sequence[RelevanceScorer], languages: Sequence[str] = VALIDATION_LANGUAGES, *,
                       split: str = "eval", n_rows: int = 100, progress: bool = True) -> RelevanceValidation:
    """Every scorer on ``n_rows`` held-out parallel rows per language (``split`` should not be the calibration's)."""
    rows = []
    for language in tqdm(list(languages), desc="validate relevance", disable=not progress, unit="language"):
        english, translated, source = parallel_pairs(language, split, n_rows)
        shuffled = translated[1:] + translated[:1]
        for scorer in scorers:
            matched_scores = np.array(scorer(english, translated, languages=[language] * len(english)))
            shuffled_scores = np.array(scorer(english, shuffled, languages=[language] * len(english)))
            rows.append(RelevanceValidationRow(scorer.name, language, source, len(english),
                                               auc(matched_scores, shuffled_scores), float(matched_scores.mean()),
                                               float(shuffled_scores.mean())))
    return RelevanceValidation(rows, {scorer.name: scorer_description(scorer) for scorer in scorers})
