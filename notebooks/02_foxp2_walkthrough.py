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
# # Neural FOXP2 walkthrough (English → Hindi)
#
# FOXP2 steers the output language with a signed, sparse shift inside a window of layers:
#
# * **stage II** (spectra): one English question answered in Hindi and in English; the residual at the first three
#   answer positions at every layer gives per-pair differences `D = Z_hi - Z_en`. Their spectrum, the captured
#   mass, its stability and the null models (shuffled pairing, a content contrast within English, a random
#   subspace), plus two scores that can separate from chance: the centred mass against the centred shuffled
#   pairing, and the Fisher ratio against randomly swapped sides; each score proposes a window;
# * **window** (dev): stage II's windows and a coarse grid, each tried with the positive term on **dev** at its
#   trust-region point (λ climbed to the first setting outside the bounds, the strongest inside kept) and scored
#   by the revision's objective J (gains in dM and DEFAULT minus the excess costs); the best J wins;
# * **stage I** (features): SAEs at the window's residual sites; English-promoting features `N_en` chosen by
#   selectivity on parallel pairs × causal logit-mass lift;
# * **stage III** (shift): at each window layer `h ← h + (λ/|W|) (ρ_l v̂_l − β Σ_{j∈N_en} z_j(h) d_j)`, with `ρ_l`
#   the layer's median residual norm and `λ` the largest strength inside a trust region on **dev** (leakage, KL
#   and NLL bounds, each raised to what prompting "Answer in Hindi." costs).
#
# FOXP2 is then evaluated on **eval** beside its controls (the positive or negative term alone, a random
# support of the same size, another window, DiffMean at the same layers) and the baselines.

# %%
import os
from pathlib import Path

import workbench as wb

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything runs offline: model and corpus ship with the package

SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"  # tiny settings (the notebook test sets it)
OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))
PROGRESS = not SMALL  # progress bars for the real runs only

TARGET = "hi"
if SMALL:  # a smoke run: 32 pairs, a 3-layer window, tiny SAEs, 4 prompts, few tokens, one control
    # the DiffMean baseline on directions fitted on 96 parallel rows alone (the quickstart's small run stores them)
    wb.register_method("diffmean", lambda: wb.methods.DirectionMethod(
        "diffmean", "diffmean", data=wb.directions.DirectionDataConfig(n_rows=96, negatives=())))
    CONFIG = wb.foxp2.Foxp2Config(
        pairs=wb.foxp2.PairDataConfig(n_pairs=32, max_length=48),
        spectral=wb.spectral.SpectralConfig(n_bootstrap=4, max_width=3),
        localise=wb.foxp2.LocaliseConfig(
            sae=wb.saes.SAETrainConfig(d_sae=256, k=16, n_tokens=4096, training_samples=8192, batch_size=256),
            n_pairs=24, n_lift_candidates=6, n_target_keep=8, n_english_keep=8),
        trust=wb.foxp2.TrustRegionConfig(strengths=(0.1, 2.0)),
        window_search=wb.foxp2.WindowSearchConfig(grid=False), beta_search=wb.foxp2.BetaSearchConfig(betas=(0.5, 1.0)),
        other_rules=(), matchings=("edit-norm",), match=wb.foxp2.MatchConfig(n_prompts=3, n_contexts=3),
        controls=("random-support",), baselines=("none", "prompt-en", "diffmean"),
        n_dev_prompts=4, dev_evaluation=wb.EvaluationConfig(max_new_tokens=6, n_utility_contexts=3,
                                                            utility_split="dev"),
        n_prompts=4, evaluation=wb.EvaluationConfig(max_new_tokens=8, n_utility_contexts=3, bootstrap_resamples=100),
        calibration=wb.CalibrationConfig(n_prompts=3, max_new_tokens=6, n_utility_contexts=2, layers=(4,),
                                         strengths=(1.0,)))
else:      # the defaults: 256 pairs, 2,560-latent TopK SAEs on 2^20 tokens, all 74 eval prompts, every control
    CONFIG = wb.foxp2.Foxp2Config()

# %%
model = wb.load_model(backend="hf")  # embedded Gemma 3 270M: HF forward + TransformerLens hook points (fastest)
model.workbench_metadata

# %% [markdown]
# ## Stage II: spectra of the English → Hindi differences and the window
#
# `spectral_stage` is cached under `~/.cache/workbench/foxp2/`; `run_foxp2` below calls it with the same
# settings and reuses the result.

# %%
spectral = wb.foxp2.spectral_stage(model, TARGET, CONFIG.source, CONFIG.pairs, CONFIG.spectral, progress=PROGRESS)
print(f"window: layers {spectral.window[0]}-{spectral.window[1]}")
spectral.frame.round(3)

# %% [markdown]
# Normalised singular values per layer (log scale): how fast they fall shows how few directions carry the
# difference.

# %%
wb.foxp2.spectra_figure(spectral)

# %% [markdown]
# Every stage II score per layer against its null models (uncentred and centred captured mass, stability, the
# Fisher ratio); stage II's own window is shaded, each score's window is in the title.

# %%
wb.foxp2.spectral_profile_figure(spectral)

# %% [markdown]
# ## All stages, the trust region, controls and baselines
#
# `run_foxp2` writes `report.md`, `metrics.json`, `results.csv`, `trust_region.csv` and the figures; each
# evaluation is saved under `runs/` and reused by a re-run with the same inputs.

# %%
result = wb.run_foxp2(model, TARGET, OUT / "foxp2", CONFIG, progress=PROGRESS)
print(f"window {result.window}, chosen λ = {result.strength:g} (within bounds: {result.within_bounds})")
result.seconds

# %%
from IPython.display import Markdown

Markdown((OUT / "foxp2" / "report.md").read_text())

# %% [markdown]
# ### β with λ on dev, and the controls at matched cost
#
# Each β's λ is climbed to the trust region's edge (`point`: its strongest admissible setting); the best J wins.
# Each control also ran at the λ where its mean edit norm |δh| (or its dev KL) equals FOXP2's.

# %%
import pandas as pd

pd.DataFrame(result.beta_search)

# %%
pd.DataFrame(result.matched)

# %% [markdown]
# ### Trust region on dev
#
# Language control (left) and the bounded costs (right) against `λ`; dashed lines are the bounds, the dotted
# line the chosen strength.

# %%
wb.foxp2.trust_region_figure(result.sweep, result.bounds, result.strength, result.target)

# %% [markdown]
# ### FOXP2 vs controls vs baselines on eval

# %%
frame = wb.foxp2.results_frame(result)
frame

# %%
wb.foxp2.comparison_figure(frame, TARGET)

# %% [markdown]
# ## Stage I: the SAE features the shift uses
#
# Kept features per side (`target`: Hindi-promoting; `english`: the `N_en` the shift subtracts), with
# selectivity on parallel pairs, causal lift (slope of the early-step mass gap per unit of activation) and
# their joint score; then the feature-space spectra at each window site.

# %%
wb.features.report_tables(result.localisation.report)["features"]

# %%
result.localisation.feature_spectra
