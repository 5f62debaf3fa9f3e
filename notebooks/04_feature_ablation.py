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
# # Single-feature ablations: which SAE features does each language need?
#
# Train a TopK SAE at one residual site (SAELens' trainer on shipped multilingual text), find the
# Hindi- and English-promoting features (selectivity on parallel pairs × causal logit-mass lift, LangFIR's
# random-token filter), then ablate single features (latent → 0, SAE error term kept, BOS untouched) and
# measure the change of held-out cross-entropy in each language. A language-specific feature raises its own
# language's CE only.

# %%
import os
from pathlib import Path

import workbench as wb

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything runs offline: model and corpus ship with the package

SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"  # tiny settings (the notebook test sets it)
OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))
PROGRESS = not SMALL  # progress bars for the real runs only

TARGET = "hi"
SITE = "6.resid_post"
if SMALL:  # a tiny SAE and a handful of features
    LANGUAGES = ("en", "hi", "es", "zh")
    SAE_CONFIG = wb.saes.SAETrainConfig(d_sae=256, k=16, n_tokens=4096, training_samples=8192, batch_size=256,
                                        languages=LANGUAGES)
    ANALYSIS = wb.features.FeatureAnalysisConfig(
        target=TARGET, n_pairs=24, n_target_keep=4, n_english_keep=4, n_ablation_features=2,
        n_ablation_langfir=1, lift=wb.features.LiftConfig(n_candidates=4, n_prompts=2),
        langfir=wb.features.LangFIRConfig(n_texts=16, n_random=16),
        tracing=wb.features.TracingConfig(n_texts=8, n_random_draws=1),
        ablation=wb.features.AblationConfig(languages=LANGUAGES, tokens_per_language=64))
else:      # the defaults: 2048 latents, k 32, 60k tokens, 240k samples; 4 features + 2 LangFIR survivors
    SAE_CONFIG = wb.saes.SAETrainConfig()
    ANALYSIS = wb.features.FeatureAnalysisConfig(target=TARGET)

# %%
model = wb.load_model(backend="hf")  # embedded Gemma 3 270M: HF forward + TransformerLens hook points (fastest)
model.workbench_metadata

# %% [markdown]
# ## Train the SAE
#
# One harvest fills an in-memory buffer; the SAE is saved in SAELens' format (`SAE.load_from_disk`) with
# `training.json`, and reused by a re-run with the same config.

# %%
import pandas as pd

trained = wb.saes.train_saes(model, [SITE], OUT / "features" / "saes", SAE_CONFIG, progress=PROGRESS)
saes = {hook: site.sae for hook, site in trained.items()}
pd.DataFrame({hook: site.record for hook, site in trained.items()}).drop(["config", "model"], errors="ignore")

# %% [markdown]
# ## Language features
#
# `run_feature_analysis` scores every feature's selectivity (Hindi vs English on parallel pairs), measures the
# causal lift of the most selective candidates, keeps the best per side, traces them to MLP neurons and runs
# the ablation study on the top ones.

# %%
report = wb.features.run_feature_analysis(model, saes, ANALYSIS, progress=PROGRESS)
wb.features.write_report(report, OUT / "features" / "analysis")
print("seconds per step:", report.provenance["timings_seconds"])
tables = wb.features.report_tables(report)
tables["features"]

# %% [markdown]
# Selectivity against causal lift for every candidate (hover: top-activating snippets).

# %%
feature_plots = wb.features.plots  # figure builders (imported by write_report above)

feature_plots.selectivity_lift_figure(report)

# %% [markdown]
# ## The per-language CE change of single-feature ablations
#
# Rows: features (site #index, and why they were chosen); columns: languages; values: held-out CE change in
# nats/token when that feature alone is ablated.

# %%
feature_plots.ablation_heatmap(report.ablation)

# %%
tables["ablation"].pivot_table(index=["site", "index"], columns="language", values="delta_ce").round(4)

# %% [markdown]
# ## Ablating features of your choice
#
# `ablation_study` takes any feature indices and an ablation mode. Here: the top Hindi-side and English-side
# features under LangFIR's directional mode (the decoder direction projected out of the whole residual, SAE
# error included), beside the zero-ablations above (latent → 0, error term kept).

# %%
from dataclasses import replace

hook = next(iter(saes))
chosen = [next(f["index"] for f in report.features if f["side"] == side)
          for side in ("target", "english") if any(f["side"] == side for f in report.features)]
study = wb.features.ablation_study(model, saes[hook], chosen, replace(ANALYSIS.ablation, mode="direction"),
                                   progress=PROGRESS)
zero = pd.DataFrame({f"#{row['index']}": row["delta_ce"] for row in report.ablation}).T
direction = pd.DataFrame(study.delta_ce.numpy(), columns=study.languages,
                         index=[f"#{f}" for f in study.features])
pd.concat({"zero (analysis above)": zero, "direction": direction}).rename_axis(["mode", "feature"]).round(4)
