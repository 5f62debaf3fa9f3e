"""The shared result schema: typed rows from metrics, one column order, a leaderboard ranked by score."""

import pandas as pd

from workbench.evaluation.results import COLUMNS, INTERVAL_METRICS, ResultRow, leaderboard_markdown, write_results


def _metrics(score: float, target: str = "hi") -> dict:
    metrics = {"target": target, "source": "en", "n_prompts": 8, "n_utility_contexts": 4, "leakage_max": 0.01,
               "leakage_mean": 0.0, "en_ppl_delta": 0.5, "relevance_chance": 0.125, "retrieval_relevance": 0.25,
               "lid_success_v1": 0.5,
               "steering_score_v1": 0.3, "repeated_ngram_share": 0.05, "distinct_2": 0.95, "output_nll": 4.0,
               "provenance": {"seconds": 3.5}, "records": []}
    for key in INTERVAL_METRICS:
        metrics[key], metrics[f"{key}_ci"] = score, [score - 0.1, score + 0.1]
    return metrics


def test_rows_carry_every_metric_with_its_interval_in_one_column_order(tmp_path):
    rows = [ResultRow.from_metrics(_metrics(0.4), method="diffmean", layer=4, strength=1.0, rule="all",
                                   selection="trust region on dev", within_bounds=False),
            ResultRow.from_metrics(_metrics(0.7), method="prompt-en", layer=None, strength=1.0, rule="all",
                                   selection="fixed"),
            ResultRow.from_metrics(_metrics(0.9), method="diffmean", layer=6, strength=2.0, rule="all",
                                   selection="sweep")]
    assert rows[0].steering_score_ci_low == 0.30000000000000004 and rows[0].seconds == 3.5
    assert rows[0].setting() == "L4 ×1 (bound not met)" and rows[1].setting() == "—"
    table = write_results(rows, {"hi": {}}, tmp_path, title="T", intro="I", extra={"model": "m"})
    assert tuple(pd.read_csv(tmp_path / "results.csv").columns) == COLUMNS == tuple(table.columns)
    board = (tmp_path / "leaderboard.md").read_text()
    assert board.index("| prompt-en |") < board.index("| diffmean |")   # ranked by score
    assert "L6 ×2" not in board                                          # sweeps are not ranked


def test_leaderboard_has_one_section_per_target():
    rows = [ResultRow.from_metrics(_metrics(0.5, target), method="none", layer=None, strength=0.0, rule="all",
                                   selection="fixed") for target in ("hi", "es")]
    board = leaderboard_markdown(rows, title="T", intro="I")
    assert "## Hindi (hi)" in board and "## Spanish (es)" in board
