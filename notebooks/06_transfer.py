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
# # Cross-lingual transfer: do language neurons help a task learned in English?
#
# Two papers make claims about *transfer*, not about the output language:
#
# * **CLAS**: rescaling neurons at the bridge layers improves zero-shot transfer (+2.3 XNLI accuracy);
# * **Mondal et al.**: setting language-specific neurons (LAPE, 90p) to their mean, P90, P10 or zero at test
#   time, or fine-tuning only those neurons (masked LoRA), does *not* improve transfer; random neurons do as well.
#
# The tasks come from the shipped corpus (LibreOffice help, aligned across languages, split by help page):
#
# * `module`: which help module a paragraph belongs to, learned on English rows only, evaluated on the *same*
#   eval rows in each target language, so English and target accuracy are paired;
# * `translate`: few-shot English -> X translation by the base model, scored with chrF and BLEU.

# %%
import os
from pathlib import Path

import workbench as wb

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything runs offline: model and corpus ship with the package

SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"  # tiny settings (the notebook test sets it)
OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))
PROGRESS = not SMALL  # progress bars for the real runs only

TARGETS = ("es",) if SMALL else ("hi", "es", "de", "zh", "ko", "ja", "ar")
NEURONS = wb.transfer.TransferInterventionConfig(  # the neuron statistics LAPE / 90p / CLAS read
    languages=("en", "es", "hi") if SMALL else ("en", "es", "hi", "zh", "ja", "ru", "ar", "de"),
    tokens=wb.neurons.TokenDataConfig(tokens_per_language=4_000 if SMALL else 50_000),
    parallel=wb.neurons.ParallelDataConfig(n_items=16 if SMALL else 200, max_length=48 if SMALL else 128),
    clas_alphas=(-0.5, 0.5) if SMALL else (-0.5, -0.25, 0.25, 0.5, 1.0))
SIZES = dict(n_train=64, n_dev=16, n_eval=24) if SMALL else dict(n_train=1024, n_dev=64, n_eval=192)

# %%
model = wb.load_model(backend="hf")  # embedded Gemma 3 270M: HF forward + TransformerLens hook points (fastest)

# %% [markdown]
# ## The module task
#
# Eight classes (Draw is merged into Impress: LibreOffice builds both from one component). Training rows are
# English, balanced by class as far as they go; every eval row exists in English and in the target.

# %%
import pandas as pd

train = wb.transfer.module_training_rows(SIZES["n_train"])
print(pd.Series([row.label for row in train]).value_counts().to_dict())
example = wb.transfer.module_rows("es", "eval", n=1)[0]
pd.Series({"label": example.label, **{code: text[:120] for code, text in example.text.items() if code in ("en", "es")}})

# %% [markdown]
# ## An English probe, with and without test-time interventions
#
# The probe reads mean-pooled residuals of the last layer (where every intervention can reach it). Each
# intervention is reported as accuracy and as a paired change against none, with bootstrap intervals: `clas`
# (alpha chosen on the target's dev rows), `lape-zero` / `lape-mean` (act(gate) of the target's LAPE neurons set to
# zero or to their mean on the target), and the same on as many random neurons per layer, matched in activation
# probability.

# %%
probe_config = wb.transfer.TransferConfig(
    targets=TARGETS, interventions=("none", "clas", "lape-zero", "random-lape-zero"), **SIZES,
    probe=wb.transfer.ProbeConfig(layers=(model.cfg.n_layers - 1,)), neurons=NEURONS)
probe = wb.transfer.run_transfer(model, probe_config, progress=PROGRESS)  # .rows: estimates, .items: per item
wb.transfer.write_transfer(probe, probe_config, OUT / "transfer" / "probe")
wb.transfer.score_figure(probe.rows, "module")

# %%
wb.transfer.gap_figure(probe.rows)  # English minus target accuracy on identical rows

# %%
from IPython.display import Markdown

Markdown(wb.transfer.leaderboard(probe.rows))

# %% [markdown]
# ## Masked LoRA: fine-tune only the target's language neurons
#
# Neuron `i` of a layer owns row `i` of `gate_proj` / `up_proj` and column `i` of `down_proj`; masking the LoRA
# factors there keeps every other neuron's effective weights bit-identical to the base model's. The first cell trains
# from a random head, only to show the mask; in `run_transfer` every LoRA run starts from a linear-probe head fit on
# the base model (LP-FT), the same head for every adaptation.

# %%
import torch

plan = wb.transfer.build_intervention(model, "lape-zero", TARGETS[0], NEURONS, progress=PROGRESS)
neurons = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.bool)
for intervention in plan.interventions:
    neurons[intervention.layer, intervention.edit.units] = True
print(f"{plan.n_neurons} LAPE neurons of {TARGETS[0]}; per layer: {neurons.sum(1).tolist()}")

lora = wb.transfer.LoraTrainConfig(steps=2 if SMALL else 100, batch_size=2 if SMALL else 8,
                                   max_length=32 if SMALL else 96)
adapted = wb.transfer.adapted_copy(model, lambda hf_model: wb.transfer.attach_lora(hf_model, lora, neurons))
wb.transfer.train_classifier(adapted, [row.text["en"] for row in train], [row.label for row in train],
                             wb.transfer.MODULES, lora, progress=PROGRESS)
layer = int(neurons.sum(1).argmax())
changed = (wb.transfer.effective_weight(adapted.hf_model.model.layers[layer].mlp.up_proj)
           != model.hf_model.model.layers[layer].mlp.up_proj.weight).any(-1)
assert torch.equal(changed & ~neurons[layer], torch.zeros_like(changed))  # only the selected neurons moved
print(f"layer {layer}: {int(changed.sum())} of {int(neurons[layer].sum())} selected up_proj rows changed, "
      "every other row bit-identical")

# %%
adapted_runs = {}
for adaptation, mask in (("lora", "lape"), ("masked-lora", "lape"), ("masked-lora", "random-lape")):
    config = wb.transfer.TransferConfig(targets=TARGETS, interventions=("none",), adaptation=adaptation, mask=mask,
                                        lora=lora, neurons=NEURONS, **SIZES)
    adapted_runs[f"{adaptation}:{mask}"] = wb.transfer.run_transfer(model, config, progress=PROGRESS)
frame = pd.DataFrame([row for run in adapted_runs.values() for row in run.rows])
frame[frame.metric.isin(["accuracy", "english_accuracy", "transfer_gap"])].pivot_table(
    index=["adaptation", "metric"], columns="language", values="value").round(3)

# %% [markdown]
# Both masked runs scored the same eval rows, so their difference gets a paired interval (Mondal et al.'s claim:
# LAPE-masked LoRA transfers no better than LoRA masked to as many random neurons).

# %%
Markdown(wb.transfer.comparison_table(wb.transfer.compare_items(
    adapted_runs["masked-lora:lape"].items, adapted_runs["masked-lora:random-lape"].items)))

# %% [markdown]
# ## Translate: few-shot English -> X, chrF and BLEU

# %%
translate_config = wb.transfer.TransferConfig(
    task="translate", targets=TARGETS, interventions=("none", "lape-zero", "random-lape-zero"), neurons=NEURONS,
    n_dev=3, n_eval=4 if SMALL else 48, max_new_tokens=16 if SMALL else 64)
translated = wb.transfer.run_transfer(model, translate_config, progress=PROGRESS)
wb.transfer.write_transfer(translated, translate_config, OUT / "transfer" / "translate")
Markdown(wb.transfer.leaderboard(translated.rows))
