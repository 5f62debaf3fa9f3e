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
# # Quickstart: steer Gemma 3 270M from English into Hindi
#
# The workbench's main loop on the embedded model (Gemma 3 270M base, loaded offline):
#
# 1. load the model and look at the shipped corpus (real parallel text, disjoint `discovery` / `dev` / `eval`
#    splits);
# 2. get a steering method by name: `diffmean` adds the difference of mean residuals (Hindi minus English,
#    on parallel discovery text) at one layer, in units of its natural scale `||mean(hi) - mean(en)||`;
# 3. build its treatment at a layer and strength: fixed here in the small run, otherwise chosen on the
#    **dev** split by `calibrate` (never on eval);
# 4. generate with and without the edit;
# 5. evaluate on **eval** prompts: LID success, relevance, steering score, early-step language mass (dM),
#    leakage and utility costs, each with a 95% interval.

# %%
import os
from pathlib import Path

import workbench as wb

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything runs offline: model and corpus ship with the package

SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"  # tiny settings (the notebook test sets it)
OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))
PROGRESS = not SMALL  # progress bars for the real runs only

TARGET = "hi"                         # English prompts are steered into this language
N_PROMPTS = 4 if SMALL else 32        # eval-split prompts
MAX_NEW_TOKENS = 12 if SMALL else 32  # greedy tokens per prompt
N_UTILITY_CONTEXTS = 3 if SMALL else 64  # question/answer contexts for the KL / NLL / perplexity costs
BOOTSTRAP = 200 if SMALL else 1000    # bootstrap resamples of the intervals
CALIBRATE = not SMALL                 # choose layer and strength on dev (cached) instead of fixing them
LAYER, STRENGTH = 4, 1.0              # the fixed setting used when not calibrating

# %% [markdown]
# ## Model and corpus
#
# The first load of the embedded model dequantises its GGUF once and caches an HF checkpoint under
# `~/.cache/workbench`; later loads take seconds. Its metadata is embedded in every artifact.

# %%
model = wb.load_model(backend="hf")  # embedded Gemma 3 270M: HF forward + TransformerLens hook points (fastest)
model.workbench_metadata

# %%
import pandas as pd

stats = wb.corpus.stats()
languages = pd.DataFrame(stats["languages"]).set_index("code")
languages[["name", "script", "parallel", "monolingual_tokens", "prompts_with_reference"]].sort_values(
    "parallel", ascending=False).head(12)

# %%
pd.DataFrame(stats["splits"])  # rows and source documents per split: disjoint by row and by document

# %% [markdown]
# The prompts are English "weak prompts" made from real help headings, with the help text that follows the
# heading in each language as a reference continuation. They are put to the base model as `Q: ...\nA:`.

# %%
rows = wb.corpus.prompts(split="eval", n=N_PROMPTS)
prompts = [wb.QA_TEMPLATE.format(prompt=row.prompt) for row in rows]
pd.DataFrame({"prompt": [row.prompt for row in rows], "reference (en)": [row.reference["en"] for row in rows]})

# %% [markdown]
# The utility costs are measured on other contexts of the same split: a help heading asked as an English question,
# followed by the paragraph after it in the target language (a human translation).

# %%
pairs = wb.corpus.qa_pairs(TARGET, split="eval", n=3)
pd.DataFrame({"question": [pair.question for pair in pairs], f"answer ({TARGET})": [pair.answer for pair in pairs]})

# %% [markdown]
# ## A steering method and its treatment
#
# A method turns (model, target, source, layer, strength, position rule) into a `Treatment`: interventions
# (hooks at TransformerLens hook points) and/or a prompt rewrite. DiffMean's directions are harvested once
# from discovery text and cached.

# %%
if SMALL:  # DiffMean's directions fitted on 96 parallel rows alone (the default: 200 rows, six more languages)
    wb.register_method("diffmean", lambda: wb.methods.DirectionMethod(
        "diffmean", "diffmean", data=wb.directions.DirectionDataConfig(n_rows=96, negatives=())))
method = wb.get_method("diffmean")
if CALIBRATE:
    calibration = wb.calibrate(model, method, TARGET, config=wb.CalibrationConfig(), progress=PROGRESS)
    layer, strength = calibration.layer, calibration.strength
else:
    calibration, layer, strength = None, LAYER, STRENGTH
treatment = method.treatment(model, TARGET, "en", layer=layer, strength=strength, rule=method.default_rule)
print(treatment.description)

# %%
# the dev-split sweep calibration chose from (layers at strength 1, then strengths at the best layer)
pd.DataFrame(calibration.sweep) if calibration else "fixed setting (small run): no calibration sweep"

# %% [markdown]
# ## Generation with and without the edit
#
# `wb.steering` applies the treatment's interventions to every forward run inside the block;
# `wb.interventions.hooks_for` turns them into `(hook name, function)` pairs instead, with fresh position state
# each call (call it once per generation or evaluation).

# %%
plain = wb.generate(model, prompts, max_new_tokens=MAX_NEW_TOKENS)
with wb.steering(model, treatment.interventions):
    steered = wb.generate(model, prompts, max_new_tokens=MAX_NEW_TOKENS)
candidates = ["en", TARGET]
identify_language = wb.evaluation.identify_language
pd.DataFrame({"prompt": [row.prompt for row in rows],
              "unsteered": plain, "LID": identify_language(plain, candidates=candidates),
              "steered": steered, "LID steered": identify_language(steered, candidates=candidates)})

# %% [markdown]
# ## Evaluation
#
# `evaluate` is the one entry point for every method. It generates (recording each language's next-token
# mass over the first 3 steps), identifies the output language offline (fastText lid.176), scores relevance
# with an independent multilingual sentence encoder, checks coherence, and measures the utility costs on
# question/answer contexts from the corpus (an English question followed by the human answer):
# KL(base || steered) over the answer positions and the NLL change of target-language answers, and the
# perplexity change of English answers.
# Intervals: Wilson for rates, seeded bootstrap otherwise.

# %%
evaluation = wb.EvaluationConfig(max_new_tokens=MAX_NEW_TOKENS, n_utility_contexts=N_UTILITY_CONTEXTS,
                                 bootstrap_resamples=BOOTSTRAP)
hooks = wb.interventions.hooks_for(model, treatment.interventions)  # fresh position state for this evaluation
metrics = wb.evaluate(model, prompts, TARGET, hooks=hooks, config=evaluation)
metrics.save(OUT / "quickstart" / "metrics.json")
summary = metrics.to_dict(with_records=False)
keys = ["steering_score", "lid_success", "relevance", "coherence", "default_rate", "delta_mass", "leakage_max",
        "kl", "nll_delta", "en_ppl_delta", "steering_score_v1"]
pd.DataFrame({"value": [summary[key] for key in keys],
              "95% interval": [summary.get(f"{key}_ci") for key in keys]}, index=keys)

# %%
pd.DataFrame(metrics.records)[["prompt", "answer", "lid", "delta_mass", "relevance", "coherent"]]

# %% [markdown]
# Reading the metrics: `lid_success` is the share of answers (outputs cut at the next "Q:") identified as the
# target language, its close relatives among the candidates; `relevance` the mean calibrated encoder similarity
# of each answer to its prompt or reference (0 = as related as a shuffled pair, 1 = as a human translation);
# `coherence` the share of readable answers; `steering_score` the harmonic mean of LID success and
# mean(relevance x coherent) (`steering_score_v1` is the first score, with retrieval relevance); `delta_mass`
# (dM) the target-minus-English next-token mass averaged over the first 3 generated steps (from −1 to 1);
# `default_rate` the share in the target language with dM > 0; `leakage_max` the largest mass gained (vs the
# unsteered model) by another language's token set; `kl` the divergence from the unsteered next-token
# distributions over the answer positions of target-language question/answer contexts; `nll_delta` and
# `en_ppl_delta` the steered model's NLL change on those target-language answers (nats/token, first 3 answer
# tokens left out) and perplexity change on English answers (an edit at every position also hits English text,
# which can cost a lot). With the small settings the intervals are wide: this is a smoke run, not a measurement.
