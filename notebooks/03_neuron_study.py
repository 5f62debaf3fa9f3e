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
# # Language neurons: LAPE, activation probability 90p and CLAS
#
# One harvest of the gate pre-activation (`blocks.{l}.mlp.hook_pre`, per-unit histograms) per language serves
# LAPE and 90p; one pooled pass over parallel items serves CLAS and AP expertise. Both are cached under
# `~/.cache/workbench/neurons/`.
#
# * **LAPE** (Tang et al.): low entropy of the per-language activation probabilities P(gate > 0); the top 1%
#   of all neurons, filtered and bucketed by language;
# * **90p**: how much more often a neuron exceeds its own language's P90 there than in the other languages;
# * **CLAS**: per layer, dead / language-specific / partial-shared / all-shared neurons, and the bridge layers;
# * the causal check: zero one language's LAPE neurons and measure every language's held-out NLL, against as
#   many random neurons in the same layers.

# %%
import os
from pathlib import Path

import workbench as wb

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything runs offline: model and corpus ship with the package

SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"  # tiny settings (the notebook test sets it)
OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))
PROGRESS = not SMALL  # progress bars for the real runs only

LANGUAGES = ("en", "hi", "zh") if SMALL else ("en", "es", "hi", "zh", "ja", "ru", "ar", "de")
CONFIG = wb.neurons.NeuronRunConfig(
    languages=LANGUAGES,
    tokens=wb.neurons.TokenDataConfig(tokens_per_language=2_000 if SMALL else 200_000),  # monolingual tokens
    parallel=wb.neurons.ParallelDataConfig(n_items=24 if SMALL else 200),               # parallel items (CLAS, AP)
    causal=wb.neurons.CausalConfig(n_texts=4 if SMALL else 16, max_length=48 if SMALL else 64))

# %%
model = wb.load_model(backend="hf")  # embedded Gemma 3 270M: HF forward + TransformerLens hook points (fastest)
model.workbench_metadata

# %% [markdown]
# ## LAPE
#
# A LAPE run also identifies the 90p and AP-expertise neurons (for the overlaps) and computes the
# deactivation matrix.

# %%
import pandas as pd

lape = wb.run_neurons("lape", OUT / "neurons" / "lape", CONFIG, model=model, progress=PROGRESS)
print(f"{lape['n_selected']} LAPE neurons; per layer: {lape['per_layer']}")
pd.DataFrame(lape["methods_per_language"])  # neurons per language, by method

# %%
neuron_plots = wb.neurons.plots  # figure builders (imported with the neuron pipeline)

neuron_plots.neurons_per_layer(wb.neurons.NeuronMask.load(OUT / "neurons" / "lape" / "mask"))

# %% [markdown]
# ### Deactivation: does zeroing a language's neurons hurt that language?
#
# Rows: the language whose LAPE neurons are zeroed; columns: the language of the held-out (eval) text.
# Values: perplexity change (absolute; `ppl_base` in the summary is the unedited perplexity), then the NLL
# change beside the control: as many random neurons per layer.

# %%
pd.DataFrame(lape["ppl_delta"]).T.rename_axis(index="deactivated", columns="evaluated")

# %%
# the same in NLL (nats/token), beside the random control
nll = pd.DataFrame(lape["nll_delta"]).T
nll_random = pd.DataFrame(lape["nll_delta_random"]).T
pd.concat({"LAPE neurons zeroed": nll, "random neurons zeroed": nll_random}, axis=1).rename_axis(
    index="deactivated").round(3)

# %%
import torch

neuron_plots.heatmap(torch.tensor(nll.to_numpy()), list(nll.index), list(nll.columns), diverging=True,
                     title="NLL change (nats/token) with the row language's LAPE neurons zeroed",
                     x_title="evaluated language (held-out text)", y_title="deactivated language",
                     colour_title="Δ NLL")

# %%
pd.Series(lape["causal"])  # diagonal dominance and the random control, summarised

# %%
pd.DataFrame(lape["jaccard_methods"]).round(3)  # per language: Jaccard overlap of two methods' neurons

# %% [markdown]
# ## Activation probability 90p

# %%
ap90 = wb.run_neurons("ap90", OUT / "neurons" / "ap90", CONFIG, model=model, progress=PROGRESS)
neuron_plots.neurons_per_layer(wb.neurons.NeuronMask.load(OUT / "neurons" / "ap90" / "mask"))

# %% [markdown]
# ## CLAS categories and bridge layers
#
# Item level: a neuron is active on an item when its mean act(gate) over the item's tokens is > 0; dataset
# level: on at least half the items. Bridge layers: the 3-layer window maximising the partial-shared minus
# dead share, avoiding the first and last 2 layers.

# %%
clas = wb.run_neurons("clas", OUT / "neurons" / "clas", CONFIG, model=model, progress=PROGRESS)
print(f"bridge layers: {clas['bridge_layers']}")
neuron_plots.category_shares(clas["category_shares"], clas["bridge_layers"])

# %%
pd.DataFrame(clas["category_shares"]).rename_axis(index="layer").round(3)

# %%
pd.Series(clas["bridge_layers_by_item_fraction"], name="bridge layers by item fraction")
