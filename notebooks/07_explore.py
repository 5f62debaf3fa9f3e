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
# # Explore: where the language is decided, one feature, one neuron
#
# The views a researcher opens first. Steer English prompts into Hindi with DiffMean and watch
# 1. each language's next-token mass over the generated steps, steered against unsteered;
# 2. the logit lens: the Hindi mass after every block at the prompt's last positions, with the edited layer marked;
# 3. the card of the SAE latent that fires most more often on Hindi than on English text;
# 4. the card of a top LAPE neuron for Hindi.

# %%
import os
from pathlib import Path

import workbench as wb

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything runs offline: model and corpus ship with the package

SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"  # tiny settings (the notebook test sets it)
OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))
PROGRESS = not SMALL  # progress bars for the real runs only

TARGET, LAYER, STRENGTH = "hi", 4, 1.0
LANGUAGES = ["en", "hi", "bn"]  # English, Hindi and a relative in another script (Bengali)
if SMALL:
    N_PROMPTS, NEW_TOKENS = 3, 6
    SAE_CONFIG = wb.saes.SAETrainConfig(d_sae=256, k=16, n_tokens=4096, training_samples=8192, batch_size=256)
    CARD = wb.views.CardConfig(languages=("en", "hi"), tokens_per_language=200, ablation_tokens=0)
    NEURONS = wb.neurons.NeuronRunConfig(languages=("en", "hi"),  # the neuron study notebook's harvests (cached)
                                         tokens=wb.neurons.TokenDataConfig(tokens_per_language=2000))
else:
    N_PROMPTS, NEW_TOKENS = 16, 24
    SAE_CONFIG = wb.saes.SAETrainConfig()  # 2048 latents at layer 6, trained once and cached
    CARD = wb.views.CardConfig()
    NEURONS = wb.neurons.NeuronRunConfig(languages=("en", "hi", "es", "zh"))

# %%
model = wb.load_model(backend="hf")  # embedded Gemma 3 270M: HF forward + TransformerLens hook points (fastest)
prompts = [wb.QA_TEMPLATE.format(prompt=row.prompt) for row in wb.corpus.prompts(split="dev", n=N_PROMPTS)]
if SMALL:  # DiffMean on 96 parallel rows alone (the quickstart's small run stores these directions)
    wb.register_method("diffmean", lambda: wb.methods.DirectionMethod(
        "diffmean", "diffmean", data=wb.directions.DirectionDataConfig(n_rows=96, negatives=())))
method = wb.get_method("diffmean")
treatment = method.treatment(model, TARGET, "en", layer=LAYER, strength=STRENGTH, rule=method.default_rule)
hooks = wb.interventions.hooks_for(model, treatment.interventions)
print(treatment.description)

# %% [markdown]
# ## Language mass during generation
#
# Mean over prompts and its 95% band, per language and generated step; hover for the tokens generated most often.

# %%
plain = wb.views.mass_trace(model, prompts, languages=LANGUAGES, max_new_tokens=NEW_TOKENS)
steered = wb.views.mass_trace(model, prompts, languages=LANGUAGES, hooks=hooks, max_new_tokens=NEW_TOKENS,
                              label=f"diffmean L{LAYER} x{STRENGTH:g}")
wb.views.mass_trace_figure([plain, steered])

# %% [markdown]
# ## Where the language is decided: the logit lens
#
# The residual stream after each block through the model's own final norm and unembedding; the top row is the
# model's next-token mass. Rows below the edited layer are the same in both maps.

# %%
lens = [wb.views.logit_lens_mass(model, prompts, languages=LANGUAGES, n_positions=8),
        wb.views.logit_lens_mass(model, prompts, languages=LANGUAGES, hooks=hooks, n_positions=8, label=steered.label)]
wb.views.logit_lens_figure(lens, language=TARGET, marked_layers=[LAYER])

# %% [markdown]
# ## One SAE latent
#
# The latent at layer 6 that fires most more often on Hindi dev text than on English, then its card.

# %%
site = "blocks.6.hook_resid_post"
sae = wb.saes.residual_saes(model, [6], SAE_CONFIG, progress=PROGRESS)[site]
batches = wb.features.language_batches(model.tokenizer, wb.features.AblationConfig(
    languages=("en", "hi"), split="dev", tokens_per_language=CARD.tokens_per_language))
rates = {lang: wb.features.firing_rates(model, {site: sae}, batches[lang], progress=False)[site]
         for lang in batches}
latent = int((rates["hi"] - rates["en"]).argmax())
card = wb.features.card(model, sae, latent, CARD, progress=PROGRESS)
(OUT / "cards").mkdir(parents=True, exist_ok=True)
(OUT / "cards" / f"latent-{latent}.html").write_text(wb.features.feature_card_html(card), encoding="utf-8")
print({lang: f"{rate:.1%}" for lang, rate in card.firing_rate.items()}, card.promoted[:5])
wb.features.cards.activation_figure(card)

# %% [markdown]
# ## One LAPE neuron
#
# LAPE's Hindi neurons (low entropy of activation probability across languages), then the card of the first one in
# the deepest layer that has any.

# %%
mask = wb.neurons.cached_mask("lape", model, NEURONS, progress=PROGRESS)
units = mask.units(TARGET)
layer = max(units)
neuron = int(units[layer][0])
neuron_card = wb.neurons.card(model, layer, neuron, CARD, masks={"lape": mask})
(OUT / "cards" / f"neuron-{layer}-{neuron}.html").write_text(wb.neurons.neuron_card_html(neuron_card),
                                                             encoding="utf-8")
print(neuron_card.activation_probability, neuron_card.membership, neuron_card.promoted[:5])
wb.neurons.cards.activation_figure(neuron_card)
