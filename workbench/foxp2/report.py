"""FOXP2 artifacts: the shared result schema (``results.csv``, ``metrics.json``, ``leaderboard.md``), plus
``trust_region.csv``, ``report.md`` and the figures."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from workbench.artifacts import atomic_write_text
from workbench.calibration import SELECTIONS
from workbench.evaluation.results import ResultRow, results_table, write_results
from workbench.features.analysis import write_report
from workbench.foxp2.config import CONTROLS, Foxp2Config, Foxp2Result
from workbench.languages import get_language
from workbench.plots import TEMPLATE, language_colour
from workbench.saes.metrics import json_safe

REPORTED = ("steering_score", "lid_success", "relevance", "coherence", "default_rate", "delta_mass", "leakage_max",
            "kl", "nll_delta", "en_ppl_delta")
"""Evaluation keys in the report's eval table (``results.csv`` has every key: :mod:`workbench.evaluation.results`)."""
LABELS = {"steering_score": "score", "lid_success": "LID", "relevance": "relevance", "coherence": "coherent",
          "default_rate": "DEFAULT",
          "delta_mass": "dM", "leakage_max": "leak max", "kl": "KL", "nll_delta": "NLL Δ", "en_ppl_delta": "en ppl Δ"}


MATCHED_ON = {"edit-norm": "mean |δh|", "kl": "KL"}


def _selection(name: str, result: Foxp2Result) -> str:
    if name == "foxp2":
        return SELECTIONS["trust-region"]
    if name == "foxp2@switch":
        return "smallest dev λ that switches the language"
    if name.startswith("foxp2@"):
        return f"{SELECTIONS['trust-region']} under {name.partition('@')[2]}"
    if name in CONTROLS:
        return "at FOXP2's λ"
    control, _, matched_on = name.partition("@")
    if control in CONTROLS:
        return f"matched to FOXP2's {MATCHED_ON[matched_on]} on dev"
    setting = result.plans[name]
    return "fixed" if setting["description"].startswith(("prompt", "no steering")) else setting.get(
        "selection", "calibrated on dev")


def result_rows(result: Foxp2Result) -> list[ResultRow]:
    """One row per variant (FOXP2, controls, baselines) in the shared result schema."""
    rows = []
    for name, metrics in result.metrics.items():
        setting = result.plans[name]
        selection = _selection(name, result)
        within = (result.within_bounds if name == "foxp2" else None if selection == "fixed"
                  else setting.get("admissible"))
        rows.append(ResultRow.from_metrics(metrics, method=name, layer=setting.get("layer"),
                                           strength=setting["strength"], rule=setting["rule"], selection=selection,
                                           within_bounds=within))
    return rows


def results_frame(result: Foxp2Result) -> pd.DataFrame:
    """The ``results.csv`` table: one row per variant with every reported metric and its 95% interval."""
    return results_table(result_rows(result))


def trust_region_figure(sweep: list[dict[str, Any]], limits: dict[str, float], strength: float, target: str
                        ) -> go.Figure:
    """Dev-split costs and language control against ``lambda``, the bounds dashed, the chosen strength marked."""
    from plotly.subplots import make_subplots

    frame = pd.DataFrame(sweep)
    figure = make_subplots(rows=1, cols=2, subplot_titles=("language control (dev)", "costs vs their bounds (dev)"))
    colour = language_colour(target)
    for key, dash in (("lid_success", "solid"), ("relevance", "dot"), ("steering_score", "dash")):
        figure.add_trace(go.Scatter(x=frame["strength"], y=frame[key], name=LABELS[key], mode="lines+markers",
                                    line={"color": colour, "dash": dash}), row=1, col=1)
    palette = {"leakage_max": "#0072B2", "kl": "#D55E00", "nll_delta": "#009E73"}
    for key, limit in limits.items():
        figure.add_trace(go.Scatter(x=frame["strength"], y=frame[key], name=LABELS[key], mode="lines+markers",
                                    line={"color": palette[key]}), row=1, col=2)
        figure.add_trace(go.Scatter(x=[frame["strength"].min(), frame["strength"].max()], y=[limit, limit],
                                    name=f"{LABELS[key]} bound ({limit:.3g})", mode="lines",
                                    line={"color": palette[key], "dash": "dash"}), row=1, col=2)
    for col in (1, 2):
        figure.add_vline(x=strength, line={"color": "#444444", "dash": "dot"}, row=1, col=col)
    figure.update_xaxes(title_text="λ (multiple of the shift)")
    figure.update_yaxes(title_text="rate (0-1)", row=1, col=1)
    figure.update_yaxes(title_text="nats (KL, NLL Δ) or mass (leakage)", row=1, col=2)
    figure.update_layout(template=TEMPLATE, legend_title="metric",
                         title=f"FOXP2 → {target}: trust region on dev (chosen λ = {strength:g}, dotted)")
    return figure


def comparison_figure(frame: pd.DataFrame, target: str) -> go.Figure:
    """LID success, relevance and steering score per variant on eval, with 95% intervals."""
    figure = go.Figure()
    palette = {"lid_success": language_colour(target), "relevance": "#0072B2", "steering_score": "#000000"}
    for key in ("lid_success", "relevance", "steering_score"):
        figure.add_trace(go.Bar(
            x=frame["method"], y=frame[key], name=LABELS[key], marker_color=palette[key],
            error_y={"type": "data", "symmetric": False, "array": frame[f"{key}_ci_high"] - frame[key],
                     "arrayminus": frame[key] - frame[f"{key}_ci_low"]}))
    figure.update_layout(template=TEMPLATE, barmode="group", yaxis_title="rate (0-1), 95% interval",
                         xaxis_title="variant (FOXP2, controls at its λ, baselines at their calibrated setting)",
                         title=f"FOXP2 → {get_language(target).name}: eval split", legend_title="metric",
                         yaxis_range=[0, 1.05])
    return figure


def window_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The row each candidate window is scored by (its trust-region point, or its weakest strength)."""
    return [row for row in rows if row["point"]]


def window_search_figure(rows: list[dict[str, Any]], target: str) -> go.Figure:
    """Each candidate window as a bar from its first to its last layer at its J (the winner highlighted)."""
    rows = window_points(rows)
    best = max(rows, key=lambda r: r["objective"])
    figure = go.Figure()
    for row in rows:
        chosen = row is best
        figure.add_trace(go.Scatter(
            x=[row["first"] - 0.4, row["last"] + 0.4], y=[row["objective"]] * 2, mode="lines",
            line={"width": 8 if chosen else 4, "color": language_colour(target) if chosen else "#999999"},
            name=f"{row['first']}-{row['last']} ({row['origin']})", hovertext=(
                f"λ {row['strength']:g}: DEFAULT {row['default_rate']:.2f}, dM "
                f"{row['delta_mass']:+.2f}, KL {row['kl']:.2f}, NLL {row['nll_delta']:+.2f}, leak "
                f"{row['leakage_max']:.3f}")))
    figure.update_layout(template=TEMPLATE, xaxis_title="layer", yaxis_title="J on dev",
                         title=f"FOXP2 → {target}: candidate windows by J (chosen: {best['first']}-{best['last']})",
                         legend_title="window (origin)")
    return figure


def _cell(metrics: dict[str, Any], key: str) -> str:
    value = metrics[key]
    if isinstance(value, float) and math.isnan(value):
        return "—"
    if f"{key}_ci" in metrics:
        low, high = metrics[f"{key}_ci"]
        return f"{value:.2f} [{low:.2f}, {high:.2f}]"
    return f"{value:.3f}" if key == "leakage_max" else f"{value:.3g}"


def _setting(setting: dict[str, Any]) -> str:
    if "beta" in setting:
        return f"λ {setting['strength']:g}, {setting['rule']}"
    if setting["description"].startswith(("prompt", "no steering")):
        return "—"
    where = "all layers" if setting["layer"] is None else f"L{setting['layer']}"
    return f"{where} ×{setting['strength']:g}"


def report_markdown(result: Foxp2Result, config: Foxp2Config, model: dict[str, Any]) -> str:
    """The human-readable report: the window, the trust region, FOXP2 vs controls vs baselines, timings."""
    name = get_language(result.target).name
    frame = result.spectral.frame
    first, last = result.window
    windows = result.spectral.windows()
    layers = slice(first, last + 1)
    lines = [f"# Neural FOXP2 → {name} ({result.target}) on {model.get('name')}", "",
             "## Stage II: steering subspace and window", "",
             f"Rows: {config.pairs.positions} representations ({result.spectral.config.get('n_rows')} rows per "
             f"language, {config.pairs.kind}). Window per score: "
             + ", ".join(f"{score} {w[0]}–{w[1]}" for score, w in windows.items()) + ".",
             f"Window used: layers **{first}–{last}**"
             + (" (best J on dev)." if result.window_search else f" ({'fixed' if config.window else 'stage II'}).")
             + f" In it: chosen ranks {', '.join(str(int(r)) for r in frame['rank'][layers])}; mass "
             f"{frame['mass'][layers].mean():.2f} (shuffled pairing {frame['shuffled_mass'][layers].mean():.2f}), "
             f"stability {frame['stability'][layers].mean():.2f}, centred mass "
             f"{frame['centred_mass'][layers].mean():.2f} "
             f"(shuffled {frame['centred_shuffled_mass'][layers].mean():.2f}), Fisher ratio "
             f"{frame['fisher'][layers].mean():.2f} (swapped sides {frame['fisher_null'][layers].mean():.3f}). "
             f"Strength units: {config.units}.", ""]
    if result.window_search:
        fixed = config.window_search.strength if config.window_search is not None else None
        at = f"λ = {fixed:g}" if fixed is not None else ("each at its trust-region point: λ climbed to the first "
                                                         "setting outside the bounds, the strongest inside kept")
        lines += [f"Candidate windows on dev (positive term only, {at}; J = 0.5 (gain dM + gain DEFAULT) − 2 leak "
                  "excess − KL excess − 2 util excess − 0.05 instability):", "",
                  "| window | origin | λ | J | DEFAULT | dM | KL | NLL Δ | leak max | within bounds |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in sorted(window_points(result.window_search), key=lambda r: -r["objective"]):
            lines.append(f"| {row['first']}–{row['last']} | {row['origin']} | {row['strength']:g} "
                         f"| {row['objective']:+.3f} | {row['default_rate']:.2f} | {row['delta_mass']:+.2f} "
                         f"| {row['kl']:.2f} | {row['nll_delta']:+.2f} | {row['leakage_max']:.3f} "
                         f"| {'yes' if row['within_bounds'] else 'no'} |")
        lines.append("")
    if result.beta_search:
        lines += [f"β jointly with λ on dev (each β's λ climbed to the first setting outside the bounds; its point is "
                  f"the strongest inside; the best J wins): β = **{result.plans['foxp2']['beta']:g}**.", "",
                  "| β | λ | J | DEFAULT | LID | dM | KL | NLL Δ | leak max | within bounds |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in result.beta_search:
            point = " ◀" if row["point"] else ""
            lines.append(f"| {row['beta']:g} | {row['strength']:g} | {row['objective']:+.3f}{point}"
                         f" | {row['default_rate']:.2f} | {row['lid_success']:.2f} | {row['delta_mass']:+.2f} "
                         f"| {row['kl']:.2f} | {row['nll_delta']:+.2f} | {row['leakage_max']:.3f} "
                         f"| {'yes' if row['within_bounds'] else 'no'} |")
        lines.append("")
    lines += ["## Stage I: English-promoting SAE features at the window", "",
             "| site | FOXP2 target features | English features (N_en) | feature-space rank | mass | stability "
             "| Fisher (swapped sides) | centred mass excess |", "|---|---|---|---|---|---|---|---|"]
    spectra = result.localisation.feature_spectra.set_index("site")
    for count in result.localisation.report.site_counts:
        site = count["site"]
        lines.append(f"| {site} | {count['target']} | {count['english']} | {int(spectra.loc[site, 'rank'])} "
                     f"| {spectra.loc[site, 'mass']:.2f} | {spectra.loc[site, 'stability']:.2f} "
                     f"| {spectra.loc[site, 'fisher']:.2f} ({spectra.loc[site, 'fisher_null']:.3f}) "
                     f"| {spectra.loc[site, 'mass_excess']:+.3f} |")
    bound_text = ", ".join(f"{LABELS[k]} ≤ {v:.3g}" for k, v in result.bounds.items())
    lines += ["", "## Stage III: trust region (dev split)", "",
              f"Bounds (each max(fixed, cost of prompting \"Answer in {name}.\")): {bound_text}. "
              f"Chosen λ = **{result.strength:g}**" + ("" if result.within_bounds else
                                                       " — no strength met every bound; the least damaging "
                                                       "(smallest NLL increase) is reported") +
              f". Positions: `{config.rule}`; β = {result.plans['foxp2']['beta']:g}.", "",
              "| λ | LID | relevance | score | dM | leak max | KL | NLL Δ |", "|---|---|---|---|---|---|---|---|"]
    for row in result.sweep:
        lines.append(f"| {row['strength']:g} | {row['lid_success']:.2f} | {row['relevance']:.2f} "
                     f"| {row['steering_score']:.2f} | {row['delta_mass']:+.2f} | {row['leakage_max']:.3f} "
                     f"| {row['kl']:.2f} | {row['nll_delta']:+.2f} |")
    if result.gate:
        lines += ["", f"Instruction gate: held-out accuracy {result.gate['accuracy']:.2f} (plain prompts switched "
                      f"off {result.gate['false_off']:.2f}, instructed prompts missed {result.gate['missed']:.2f})."]
    first_metrics = next(iter(result.metrics.values()))
    lines += ["", f"## Eval split: FOXP2 vs controls vs baselines ({first_metrics['n_prompts']} prompts, "
                  f"{first_metrics['n_utility_contexts']} utility contexts, {config.evaluation.max_new_tokens} greedy "
                  "tokens, 95% intervals; relevance "
                  f"{first_metrics['provenance']['relevance']['scorer']})", "",
              "| variant | setting | " + " | ".join(LABELS[k] for k in REPORTED) + " |",
              "|---|---|" + "---|" * len(REPORTED)]
    for variant, metrics in result.metrics.items():
        cells = " | ".join(_cell(metrics, key) for key in REPORTED)
        lines.append(f"| {variant} | {_setting(result.plans[variant])} | {cells} |")
    if "foxp2@switch" in result.plans:
        lines += ["", f"`foxp2@switch` is the same shift at λ = {result.plans['foxp2@switch']['strength']:g}, the "
                      f"smallest dev strength whose LID success reached {config.switch_lid:g}: outside the trust "
                      "region, shown for what the shift does once it switches the language."]
    if result.matched:
        lines += ["", "Controls at matched cost: each control's λ rescaled so that its mean edit norm |δh| on "
                      f"{config.match.n_prompts} dev prompts, or its KL on {config.match.n_contexts} dev utility "
                      "contexts, equals FOXP2's at its λ (`<control>@edit-norm`, `<control>@kl` above).", "",
                  "| control | matched on | λ | control's value | FOXP2's value | measurements |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {row['control']} | {MATCHED_ON[row['matched_on']]} | {row['strength']:.3g} | {row['value']:.3g} "
                  f"| {row['reference']:.3g} | {row['steps']} |" for row in result.matched]
    lines += ["", "## Time per stage (seconds)", "",
              *[f"- {stage}: {value:.0f}" + (" (loaded from the cache)" if value < 1 else "")
                for stage, value in result.seconds.items()], ""]
    return "\n".join(lines)


def write_foxp2_report(result: Foxp2Result, config: Foxp2Config, model: dict[str, Any]) -> None:
    """Every artifact of a FOXP2 run into ``result.out_dir``."""
    out = result.out_dir
    result.spectral.write(out / "spectral")
    write_report(result.localisation.report, out / "features")
    extra = json_safe({
        "model": model, "target": result.target, "source": config.source, "window": list(result.window),
        "strength": result.strength, "within_bounds": result.within_bounds, "bounds": result.bounds,
        "gate": result.gate, "seconds": result.seconds, "stage1": result.localisation.summary(),
        "plans": result.plans, "trust_region": result.sweep, "window_search": result.window_search,
        "matched_controls": result.matched, "beta_search": result.beta_search,
        "config": asdict(config)})
    frame = write_results(result_rows(result), {result.target: json_safe(result.metrics)}, out,
                          title=f"FOXP2 → {get_language(result.target).name}: eval split",
                          intro="FOXP2 at its trust-region λ, its controls at the same λ and at the λ matching FOXP2's "
                                "edit norm and dev KL, the baselines at their calibrated setting; 95% intervals.",
                          extra=extra)
    atomic_write_text(out / "trust_region.csv", pd.DataFrame(result.sweep).to_csv(index=False))
    if result.beta_search:
        atomic_write_text(out / "beta_search.csv", pd.DataFrame(result.beta_search).to_csv(index=False))
    if result.window_search:
        atomic_write_text(out / "window_search.csv", pd.DataFrame(result.window_search).to_csv(index=False))
        atomic_write_text(out / "window_search.html",
                          window_search_figure(result.window_search, result.target).to_html(include_plotlyjs="cdn"))
    atomic_write_text(out / "trust_region.html", trust_region_figure(result.sweep, result.bounds, result.strength,
                                                                     result.target).to_html(include_plotlyjs="cdn"))
    atomic_write_text(out / "comparison.html", comparison_figure(frame, result.target).to_html(include_plotlyjs="cdn"))
    atomic_write_text(out / "report.md", report_markdown(result, config, model))
