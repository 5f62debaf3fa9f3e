# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Method comparison: the steering benchmark
#
# `run_bench` evaluates methods × target languages on the **eval** split. Tunable methods are first calibrated on
# **dev** by one rule, so every method gets the same budget: every candidate layer at strength 1 (the best dev
# score kept), then the strongest strength at that layer whose dev KL, leakage and in-language NLL stay within
# bounds raised to what native prompting costs (calibrations are cached under `~/.cache/workbench`).
# Prompting baselines ("Answer in <Language>.", in English or in the language) and the unsteered model run
# beside them. Each evaluation is saved under `runs/` and reused by a re-run.

# %%
import os
from pathlib import Path

import workbench as wb

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything runs offline: model and corpus ship with the package

SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"  # tiny settings (the notebook test sets it)
OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))
PROGRESS = not SMALL  # progress bars for the real runs only

if SMALL:  # three methods, one target, 4 prompts, one calibration setting
    # DiffMean's directions fitted on 96 parallel rows and Hindi texts (the default: 200 rows, six languages):
    # a registered name can be replaced by any factory, e.g. a method of your own
    wb.register_method("diffmean", lambda: wb.methods.DirectionMethod(
        "diffmean", "diffmean", data=wb.directions.DirectionDataConfig(n_rows=96, negatives=("hi",))))
    CONFIG = wb.BenchConfig(
        methods=("none", "prompt-en", "diffmean"), targets=("es",), n_prompts=4,
        evaluation=wb.EvaluationConfig(max_new_tokens=8, n_utility_contexts=3, bootstrap_resamples=200),
        calibration=wb.CalibrationConfig(n_prompts=4, max_new_tokens=8, n_utility_contexts=2, layers=(4,),
                                         strengths=(1.0,)))
else:      # the README's table: every method, hi / es / zh, the whole eval split, 32 greedy tokens, a DiffMean sweep
    CONFIG = wb.BenchConfig(sweep_methods=("diffmean",), sweep_layers=(2, 4, 6, 8), sweep_strengths=(0.5, 1.0, 1.5))

# %%
model = wb.load_model(backend="hf")  # embedded Gemma 3 270M: HF forward + TransformerLens hook points (fastest)
model.workbench_metadata

# %%
result = wb.run_bench(model, CONFIG, OUT / "bench", progress=PROGRESS)

# %% [markdown]
# ## Leaderboard
#
# Per target, methods ranked by steering score (harmonic mean of LID success and relevance) at their
# calibrated setting, with 95% intervals.

# %%
from IPython.display import Markdown

Markdown((OUT / "bench" / "leaderboard.md").read_text())  # written by run_bench

# %% [markdown]
# ## The results table
#
# One row per evaluated setting (`selection`: `fixed`, `trust region on dev`, or `sweep`), every metric with its
# interval bounds; also written to `results.csv`.

# %%
result.table

# %% [markdown]
# ## Dev frontiers
#
# Every setting each calibration evaluated on dev (`frontier.csv`): LID success (solid) and DEFAULT (dotted)
# against KL over the method's strength grid, the chosen setting ringed and the KL bound dashed. A method that
# switches the language only outside the bound shows its curve rising right of the line.

# %%
import pandas as pd

wb.bench.frontier_figure(pd.read_csv(OUT / "bench" / "frontier.csv"))

# %%
wb.bench.method_language_figure(result.table)

# %% [markdown]
# ## What calibration saw on dev

# %%
import pandas as pd

pd.DataFrame([{"target": target, "method": method, **row}
              for target, by_method in result.calibrations.items()
              for method, calibration in by_method.items() for row in calibration["sweep"]])

# %% [markdown]
# ## Outputs
#
# Each evaluation under `runs/` keeps its per-prompt records: the prompt as the model saw it (prompting
# baselines rewrite it), the answer (the output cut at the next "Q:"), its identified language, its relevance
# (calibrated encoder similarity to the prompt and reference) and whether it is coherent.

# %%
import json

runs = [json.loads(path.read_text()) for path in sorted((OUT / "bench" / "runs").glob("*.json"))]
records = pd.DataFrame([{"method": run["provenance"]["identity"]["method"], "target": run["target"], **record}
                        for run in runs for record in run["records"]])
records[["method", "target", "model_prompt", "answer", "lid", "relevance", "coherent"]]
