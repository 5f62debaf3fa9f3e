"""(Re)generate the project's notebooks from the cell sources below, without outputs.

    python scripts/build_notebooks.py            # write notebooks/*.ipynb
    python scripts/build_notebooks.py --check    # exit 1 if a committed notebook differs from its source here

The notebooks hold no library logic: they call the package and show what it returns (tables, plotly figures,
reports). Every notebook starts with a parameter cell: ``WORKBENCH_NOTEBOOK_SMALL=1`` selects tiny settings (the
test suite executes every notebook that way, see ``tests/test_notebooks.py``); otherwise the real settings run.
``WORKBENCH_NOTEBOOK_OUT`` is where the artifacts go (default ``figures/notebooks``).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"

Cell = tuple[str, str]
"""(``"markdown"`` or ``"code"``, source)."""


def md(source: str) -> Cell:
    return "markdown", textwrap.dedent(source).strip("\n")


def code(source: str) -> Cell:
    return "code", textwrap.dedent(source).strip("\n")


# Shared head of every parameter cell.
_PARAMETERS = """
    import os
    from pathlib import Path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything runs offline: model and corpus ship with the package

    SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"  # tiny settings (the notebook test sets it)
    OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))
    PROGRESS = not SMALL  # progress bars for the real runs only
"""


def parameters(settings: str) -> Cell:
    """The first code cell: environment, ``SMALL``, ``OUT`` and the notebook's settings chosen from ``SMALL``."""
    return code(textwrap.dedent(_PARAMETERS).strip("\n") + "\n\n" + textwrap.dedent(settings).strip("\n"))


_LOAD_MODEL = code("""
    from workbench.models import load_model

    model = load_model(backend="hf")  # embedded Gemma 3 270M: HF forward + TransformerLens hook points (fastest)
    model.workbench_metadata
""")

# ------------------------------------------------------------------------------------------------ 01 quickstart

QUICKSTART: list[Cell] = [
    md("""
        # Quickstart: steer Gemma 3 270M from English into Hindi

        The workbench's main loop on the embedded model (Gemma 3 270M base, loaded offline):

        1. load the model and look at the shipped corpus (real parallel text, disjoint `discovery` / `dev` / `eval`
           splits);
        2. get a steering method by name: `diffmean` adds the difference of mean residuals (Hindi minus English,
           on parallel discovery text) at one layer, in units of its natural scale `||mean(hi) - mean(en)||`;
        3. build its treatment at a layer and strength: fixed here in the small run, otherwise chosen on the
           **dev** split by `calibrate` (never on eval);
        4. generate with and without the edit;
        5. evaluate on **eval** prompts: LID success, relevance, steering score, early-step language mass (dM),
           leakage and utility costs, each with a 95% interval.
    """),
    parameters("""
        TARGET = "hi"                         # English prompts are steered into this language
        N_PROMPTS = 4 if SMALL else 32        # eval-split prompts
        MAX_NEW_TOKENS = 12 if SMALL else 32  # greedy tokens per prompt
        N_UTILITY_TEXTS = 3 if SMALL else 16  # held-out texts for the NLL / perplexity costs
        BOOTSTRAP = 200 if SMALL else 1000    # bootstrap resamples of the intervals
        CALIBRATE = not SMALL                 # choose layer and strength on dev (cached) instead of fixing them
        LAYER, STRENGTH = 4, 1.0              # the fixed setting used when not calibrating
    """),
    md("""
        ## Model and corpus

        The first load of the embedded model dequantises its GGUF once and caches an HF checkpoint under
        `~/.cache/workbench`; later loads take seconds. Its metadata is embedded in every artifact.
    """),
    _LOAD_MODEL,
    code("""
        import pandas as pd

        from workbench import corpus

        stats = corpus.stats()
        languages = pd.DataFrame(stats["languages"]).set_index("code")
        languages[["name", "script", "parallel", "monolingual_tokens", "prompts_with_reference"]].sort_values(
            "parallel", ascending=False).head(12)
    """),
    code("""
        pd.DataFrame(stats["splits"])  # rows and source documents per split: disjoint by row and by document
    """),
    md("""
        The prompts are English "weak prompts" made from real help headings, with the help text that follows the
        heading in each language as a reference continuation. They are put to the base model as `Q: ...\\nA:`.
    """),
    code("""
        from workbench.evaluation import QA_TEMPLATE

        rows = corpus.prompts(split="eval", n=N_PROMPTS)
        prompts = [QA_TEMPLATE.format(prompt=row.prompt) for row in rows]
        references = [row.reference.get(TARGET) for row in rows]  # None where the help page has no translation
        pd.DataFrame({"prompt": [row.prompt for row in rows], "reference (en)": [row.reference["en"] for row in rows],
                      f"has {TARGET} reference": [ref is not None for ref in references]})
    """),
    md("""
        ## A steering method and its treatment

        A method turns (model, target, source, layer, strength, position rule) into a `Treatment`: interventions
        (hooks at TransformerLens hook points) and/or a prompt rewrite. DiffMean's directions are harvested once
        from discovery text and cached.
    """),
    code("""
        from workbench.methods import get_method
        from workbench.pipelines.calibrate import CalibrationConfig, calibrate

        method = get_method("diffmean")
        if CALIBRATE:
            calibration = calibrate(model, method, TARGET, config=CalibrationConfig(), progress=PROGRESS)
            layer, strength = calibration.layer, calibration.strength
        else:
            calibration, layer, strength = None, LAYER, STRENGTH
        treatment = method.treatment(model, TARGET, "en", layer=layer, strength=strength, rule=method.default_rule)
        print(treatment.description)
    """),
    code("""
        # the dev-split sweep calibration chose from (layers at strength 1, then strengths at the best layer)
        pd.DataFrame(calibration.sweep) if calibration else "fixed setting (small run): no calibration sweep"
    """),
    md("""
        ## Generation with and without the edit

        `hooks_for` turns interventions into `(hook name, function)` pairs; each call gives fresh position state,
        so call it once per generation or evaluation.
    """),
    code("""
        from workbench.evaluation import identify_language
        from workbench.interventions import hooks_for
        from workbench.generation import generate

        plain = generate(model, prompts, max_new_tokens=MAX_NEW_TOKENS)
        steered = generate(model, prompts, hooks=hooks_for(model, treatment.interventions),
                           max_new_tokens=MAX_NEW_TOKENS)
        candidates = ["en", TARGET]
        pd.DataFrame({"prompt": [row.prompt for row in rows],
                      "unsteered": plain, "LID": identify_language(plain, candidates=candidates),
                      "steered": steered, "LID steered": identify_language(steered, candidates=candidates)})
    """),
    md("""
        ## Evaluation

        `evaluate` is the one entry point for every method. It generates (recording each language's next-token
        mass over the first 3 steps), identifies the output language offline (fastText lid.176), scores relevance
        by retrieving each output's own prompt among the batch, and measures the utility costs: KL(base || steered)
        on committed contexts and the in-language NLL / English perplexity changes on held-out text.
        Intervals: Wilson for rates, seeded bootstrap otherwise.
    """),
    code("""
        from workbench.evaluation import EvaluationConfig, evaluate

        evaluation = EvaluationConfig(max_new_tokens=MAX_NEW_TOKENS, n_utility_texts=N_UTILITY_TEXTS,
                                      bootstrap_resamples=BOOTSTRAP)
        metrics = evaluate(model, prompts, TARGET, hooks=hooks_for(model, treatment.interventions),
                           references=references, config=evaluation)
        metrics.save(OUT / "quickstart" / "metrics.json")
        summary = metrics.to_dict(with_records=False)
        keys = ["steering_score", "lid_success", "relevance", "default_rate", "delta_mass", "leakage_max", "kl",
                "nll_delta", "en_ppl_delta", "relevance_chance"]
        pd.DataFrame({"value": [summary[key] for key in keys],
                      "95% interval": [summary.get(f"{key}_ci") for key in keys]}, index=keys)
    """),
    code("""
        pd.DataFrame(metrics.records)[["prompt", "output", "lid", "delta_mass", "relevant"]]
    """),
    md("""
        Reading the metrics: `lid_success` is the share of outputs identified as the target language;
        `relevance` the share whose output retrieves its own prompt (chance `relevance_chance` = 1 / prompts);
        `steering_score` their harmonic mean; `delta_mass` (dM) the target-minus-English next-token mass averaged
        over the first 3 generated steps (from −1 to 1); `default_rate` the share in the target language with
        dM > 0; `leakage_max` the largest mass gained (vs the unsteered model) by another language's token set;
        `kl` the divergence from the unsteered next-token distribution on committed contexts; `nll_delta` and
        `en_ppl_delta` the steered model's NLL change on held-out target-language text (nats/token) and
        perplexity change on English text (an edit at every position also hits English text, which can cost a
        lot). With the small settings the intervals are wide: this is a smoke run, not a measurement.
    """),
]

# --------------------------------------------------------------------------------------------- 02 FOXP2 walkthrough

FOXP2: list[Cell] = [
    md("""
        # Neural FOXP2 walkthrough (English → Hindi)

        FOXP2 steers the output language with a signed, sparse shift inside a window of layers:

        * **stage II** (spectra): pool each parallel sentence's residual at every layer, take the per-pair
          differences `D = Z_hi - Z_en` and study their spectrum. The language difference is low-rank and stable
          (unlike the null models: shuffled pairing, a content contrast within English, a random subspace); the
          intervention window is the contiguous run of layers maximising captured mass × bootstrap stability;
        * **stage I** (features): SAEs at the window's residual sites; English-promoting features `N_en` chosen by
          selectivity on parallel pairs × causal logit-mass lift;
        * **stage III** (shift): at each window layer `h ← h + λ (v_tgt − β Σ_{j∈N_en} z_j(h) d_j)`, with `λ` the
          largest strength inside a trust region on **dev** (leakage, KL and NLL bounds, each raised to what
          prompting "Answer in Hindi." costs).

        FOXP2 is then evaluated on **eval** beside its controls (the positive or negative term alone, a random
        support of the same size, another window, DiffMean at the same layers) and the baselines.
    """),
    parameters("""
        from workbench.evaluation import EvaluationConfig
        from workbench.foxp2.pipeline import Foxp2Config
        from workbench.foxp2.sae_features import LocaliseConfig
        from workbench.foxp2.spectra import PairDataConfig
        from workbench.foxp2.trust import TrustRegionConfig
        from workbench.pipelines.calibrate import CalibrationConfig
        from workbench.saes.config import SAETrainConfig
        from workbench.spectral import SpectralConfig

        TARGET = "hi"
        if SMALL:  # a smoke run: 32 pairs, a 3-layer window, tiny SAEs, 4 prompts, few tokens, one control
            CONFIG = Foxp2Config(
                pairs=PairDataConfig(n_pairs=32, max_length=48),
                spectral=SpectralConfig(n_bootstrap=4, max_width=3),
                localise=LocaliseConfig(sae=SAETrainConfig(d_sae=256, k=16, n_tokens=4096, training_samples=8192,
                                                           batch_size=256),
                                        n_pairs=24, n_lift_candidates=6, n_target_keep=8, n_english_keep=8),
                trust=TrustRegionConfig(strengths=(0.1, 0.5)),
                controls=("random-support",), baselines=("none", "prompt-en", "diffmean"),
                n_dev_prompts=4, dev_evaluation=EvaluationConfig(max_new_tokens=6, n_utility_texts=3,
                                                                 utility_split="dev"),
                n_prompts=4, evaluation=EvaluationConfig(max_new_tokens=8, n_utility_texts=3, bootstrap_resamples=100),
                calibration=CalibrationConfig(n_prompts=3, max_new_tokens=6, n_utility_texts=2, layers=(4,),
                                              strengths=(1.0,)))
        else:      # the method's defaults: 256 pairs, 2048-latent TopK SAEs, 32 eval prompts, every control
            CONFIG = Foxp2Config()
    """),
    _LOAD_MODEL,
    md("""
        ## Stage II: spectra of the English → Hindi differences and the window

        `spectral_stage` is cached under `~/.cache/workbench/foxp2/`; `run_foxp2` below calls it with the same
        settings and reuses the result.
    """),
    code("""
        from workbench.foxp2.spectra import spectra_figure, spectral_profile_figure, spectral_stage

        spectral = spectral_stage(model, TARGET, CONFIG.source, CONFIG.pairs, CONFIG.spectral, progress=PROGRESS)
        print(f"window: layers {spectral.window[0]}-{spectral.window[1]}")
        spectral.frame.round(3)
    """),
    md("""
        Normalised singular values per layer (log scale): how fast they fall shows how few directions carry the
        difference.
    """),
    code("""
        spectra_figure(spectral)
    """),
    md("""
        Captured mass and bootstrap stability of the chosen-rank subspace per layer, against the null models; the
        window is shaded.
    """),
    code("""
        spectral_profile_figure(spectral)
    """),
    md("""
        ## All stages, the trust region, controls and baselines

        `run_foxp2` writes `report.md`, `metrics.json`, `results.csv`, `trust_region.csv` and the figures; each
        evaluation is saved under `runs/` and reused by a re-run with the same inputs.
    """),
    code("""
        from workbench.foxp2.pipeline import run_foxp2

        result = run_foxp2(model, TARGET, OUT / "foxp2", CONFIG, progress=PROGRESS)
        print(f"window {result.window}, chosen λ = {result.strength:g} (within bounds: {result.within_bounds})")
        result.seconds
    """),
    code("""
        from IPython.display import Markdown

        Markdown((OUT / "foxp2" / "report.md").read_text())
    """),
    md("""
        ### Trust region on dev

        Language control (left) and the bounded costs (right) against `λ`; dashed lines are the bounds, the dotted
        line the chosen strength.
    """),
    code("""
        from workbench.foxp2.report import comparison_figure, results_frame, trust_region_figure

        trust_region_figure(result.sweep, result.bounds, result.strength, result.target)
    """),
    md("""
        ### FOXP2 vs controls vs baselines on eval
    """),
    code("""
        frame = results_frame(result)
        frame
    """),
    code("""
        comparison_figure(frame, TARGET)
    """),
    md("""
        ## Stage I: the SAE features the shift uses

        Kept features per side (`target`: Hindi-promoting; `english`: the `N_en` the shift subtracts), with
        selectivity on parallel pairs, causal lift (slope of the early-step mass gap per unit of activation) and
        their joint score; then the feature-space spectra at each window site.
    """),
    code("""
        from workbench.features.analysis import report_tables

        report_tables(result.localisation.report)["features"]
    """),
    code("""
        result.localisation.feature_spectra
    """),
]

# ---------------------------------------------------------------------------------------------- 03 neuron study

NEURONS: list[Cell] = [
    md("""
        # Language neurons: LAPE, activation probability 90p and CLAS

        One harvest of the gate pre-activation (`blocks.{l}.mlp.hook_pre`, per-unit histograms) per language serves
        LAPE and 90p; one pooled pass over parallel items serves CLAS and AP expertise. Both are cached under
        `~/.cache/workbench/neurons/`.

        * **LAPE** (Tang et al.): low entropy of the per-language activation probabilities P(gate > 0); the top 1%
          of all neurons, filtered and bucketed by language;
        * **90p**: how much more often a neuron exceeds its own language's P90 there than in the other languages;
        * **CLAS**: per layer, dead / language-specific / partial-shared / all-shared neurons, and the bridge layers;
        * the causal check: zero one language's LAPE neurons and measure every language's held-out NLL, against as
          many random neurons in the same layers.
    """),
    parameters("""
        from workbench.neurons.causal import CausalConfig
        from workbench.neurons.data import ParallelDataConfig, TokenDataConfig
        from workbench.neurons.pipeline import NeuronRunConfig

        LANGUAGES = ("en", "hi", "zh") if SMALL else ("en", "es", "hi", "zh", "ja", "ru", "ar", "de")
        CONFIG = NeuronRunConfig(
            languages=LANGUAGES,
            tokens=TokenDataConfig(tokens_per_language=2_000 if SMALL else 200_000),  # monolingual discovery tokens
            parallel=ParallelDataConfig(n_items=24 if SMALL else 200),               # parallel items (CLAS, AP)
            causal=CausalConfig(n_texts=4 if SMALL else 16, max_length=48 if SMALL else 64))
    """),
    _LOAD_MODEL,
    md("""
        ## LAPE

        A LAPE run also identifies the 90p and AP-expertise neurons (for the overlaps) and computes the
        deactivation matrix.
    """),
    code("""
        import pandas as pd

        from workbench.neurons.pipeline import run_neurons

        lape = run_neurons("lape", OUT / "neurons" / "lape", CONFIG, model=model, progress=PROGRESS)
        print(f"{lape['n_selected']} LAPE neurons; per layer: {lape['per_layer']}")
        pd.DataFrame(lape["methods_per_language"])  # neurons per language, by method
    """),
    code("""
        from workbench.neurons.masks import NeuronMask
        from workbench.neurons.plots import heatmap, neurons_per_layer

        neurons_per_layer(NeuronMask.load(OUT / "neurons" / "lape" / "mask"))
    """),
    md("""
        ### Deactivation: does zeroing a language's neurons hurt that language?

        Rows: the language whose LAPE neurons are zeroed; columns: the language of the held-out (eval) text.
        Values: perplexity change (absolute; `ppl_base` in the summary is the unedited perplexity), then the NLL
        change beside the control: as many random neurons per layer.
    """),
    code("""
        pd.DataFrame(lape["ppl_delta"]).T.rename_axis(index="deactivated", columns="evaluated")
    """),
    code("""
        # the same in NLL (nats/token), beside the random control
        nll = pd.DataFrame(lape["nll_delta"]).T
        nll_random = pd.DataFrame(lape["nll_delta_random"]).T
        pd.concat({"LAPE neurons zeroed": nll, "random neurons zeroed": nll_random}, axis=1).rename_axis(
            index="deactivated").round(3)
    """),
    code("""
        import torch

        heatmap(torch.tensor(nll.to_numpy()), list(nll.index), list(nll.columns), diverging=True,
                title="NLL change (nats/token) with the row language's LAPE neurons zeroed",
                x_title="evaluated language (held-out text)", y_title="deactivated language", colour_title="Δ NLL")
    """),
    code("""
        pd.Series(lape["causal"])  # diagonal dominance and the random control, summarised
    """),
    code("""
        pd.DataFrame(lape["jaccard_methods"]).round(3)  # per language: Jaccard overlap of two methods' neurons
    """),
    md("""
        ## Activation probability 90p
    """),
    code("""
        ap90 = run_neurons("ap90", OUT / "neurons" / "ap90", CONFIG, model=model, progress=PROGRESS)
        neurons_per_layer(NeuronMask.load(OUT / "neurons" / "ap90" / "mask"))
    """),
    md("""
        ## CLAS categories and bridge layers

        Item level: a neuron is active on an item when its mean act(gate) over the item's tokens is > 0; dataset
        level: on at least half the items. Bridge layers: the 3-layer window maximising the partial-shared minus
        dead share, avoiding the first and last 2 layers.
    """),
    code("""
        from workbench.neurons.plots import category_shares

        clas = run_neurons("clas", OUT / "neurons" / "clas", CONFIG, model=model, progress=PROGRESS)
        print(f"bridge layers: {clas['bridge_layers']}")
        category_shares(clas["category_shares"], clas["bridge_layers"])
    """),
    code("""
        pd.DataFrame(clas["category_shares"]).rename_axis(index="layer").round(3)
    """),
    code("""
        pd.Series(clas["bridge_layers_by_item_fraction"], name="bridge layers by item fraction")
    """),
]

# ----------------------------------------------------------------------------------------- 04 feature ablation

FEATURES: list[Cell] = [
    md("""
        # Single-feature ablations: which SAE features does each language need?

        Train a TopK SAE at one residual site (SAELens' trainer on shipped multilingual text), find the
        Hindi- and English-promoting features (selectivity on parallel pairs × causal logit-mass lift, LangFIR's
        random-token filter), then ablate single features (latent → 0, SAE error term kept, BOS untouched) and
        measure the change of held-out cross-entropy in each language. A language-specific feature raises its own
        language's CE only.
    """),
    parameters("""
        from workbench.features.ablation import AblationConfig
        from workbench.features.analysis import FeatureAnalysisConfig, LangFIRConfig, LiftConfig, TracingConfig
        from workbench.saes.config import SAETrainConfig

        TARGET = "hi"
        SITE = "6.resid_post"
        if SMALL:  # a tiny SAE and a handful of features
            LANGUAGES = ("en", "hi", "es", "zh")
            SAE_CONFIG = SAETrainConfig(d_sae=256, k=16, n_tokens=4096, training_samples=8192, batch_size=256,
                                        languages=LANGUAGES)
            ANALYSIS = FeatureAnalysisConfig(
                target=TARGET, n_pairs=24, n_target_keep=4, n_english_keep=4, n_ablation_features=2,
                n_ablation_langfir=1, lift=LiftConfig(n_candidates=4, n_prompts=2),
                langfir=LangFIRConfig(n_texts=16, n_random=16), tracing=TracingConfig(n_texts=8, n_random_draws=1),
                ablation=AblationConfig(languages=LANGUAGES, tokens_per_language=64))
        else:      # the defaults: 2048 latents, k 32, 60k tokens, 240k samples; 4 features + 2 LangFIR survivors
            SAE_CONFIG = SAETrainConfig()
            ANALYSIS = FeatureAnalysisConfig(target=TARGET)
    """),
    _LOAD_MODEL,
    md("""
        ## Train the SAE

        One harvest fills an in-memory buffer; the SAE is saved in SAELens' format (`SAE.load_from_disk`) with
        `training.json`, and reused by a re-run with the same config.
    """),
    code("""
        import pandas as pd

        from workbench.saes.training import train_saes

        trained = train_saes(model, [SITE], OUT / "features" / "saes", SAE_CONFIG, progress=PROGRESS)
        saes = {hook: site.sae for hook, site in trained.items()}
        pd.DataFrame({hook: site.record for hook, site in trained.items()}).drop(["config", "model"], errors="ignore")
    """),
    md("""
        ## Language features

        `run_feature_analysis` scores every feature's selectivity (Hindi vs English on parallel pairs), measures the
        causal lift of the most selective candidates, keeps the best per side, traces them to MLP neurons and runs
        the ablation study on the top ones.
    """),
    code("""
        from workbench.features.analysis import report_tables, run_feature_analysis, write_report

        report = run_feature_analysis(model, saes, ANALYSIS, progress=PROGRESS)
        write_report(report, OUT / "features" / "analysis")
        print("seconds per step:", report.provenance["timings_seconds"])
        tables = report_tables(report)
        tables["features"]
    """),
    md("""
        Selectivity against causal lift for every candidate (hover: top-activating snippets).
    """),
    code("""
        from workbench.features.plots import ablation_heatmap, selectivity_lift_figure

        selectivity_lift_figure(report)
    """),
    md("""
        ## The per-language CE change of single-feature ablations

        Rows: features (site #index, and why they were chosen); columns: languages; values: held-out CE change in
        nats/token when that feature alone is ablated.
    """),
    code("""
        ablation_heatmap(report.ablation)
    """),
    code("""
        tables["ablation"].pivot_table(index=["site", "index"], columns="language", values="delta_ce").round(4)
    """),
    md("""
        ## Ablating features of your choice

        `ablation_study` takes any feature indices and an ablation mode. Here: the top Hindi-side and English-side
        features under LangFIR's directional mode (the decoder direction projected out of the whole residual, SAE
        error included), beside the zero-ablations above (latent → 0, error term kept).
    """),
    code("""
        from dataclasses import replace

        from workbench.features.ablation import ablation_study

        hook = next(iter(saes))
        chosen = [next(f["index"] for f in report.features if f["side"] == side)
                  for side in ("target", "english") if any(f["side"] == side for f in report.features)]
        study = ablation_study(model, saes[hook], chosen, replace(ANALYSIS.ablation, mode="direction"),
                               progress=PROGRESS)
        zero = pd.DataFrame({f"#{row['index']}": row["delta_ce"] for row in report.ablation}).T
        direction = pd.DataFrame(study.delta_ce.numpy(), columns=study.languages,
                                 index=[f"#{f}" for f in study.features])
        pd.concat({"zero (analysis above)": zero, "direction": direction}).rename_axis(["mode", "feature"]).round(4)
    """),
]

# ---------------------------------------------------------------------------------------- 05 method comparison

BENCH: list[Cell] = [
    md("""
        # Method comparison: the steering benchmark

        `run_bench` evaluates methods × target languages on the **eval** split. Tunable methods (layer and strength
        for DiffMean, PCA, LDA and the probe; strength for LAPE) are first calibrated on **dev**: every candidate
        layer at strength 1, then every strength at the best layer, keeping the best steering score whose
        in-language NLL increase stays within the bound (calibrations are cached under `~/.cache/workbench`).
        Prompting baselines ("Answer in <Language>.", in English or in the language) and the unsteered model run
        beside them. Each evaluation is saved under `runs/` and reused by a re-run.
    """),
    parameters("""
        from workbench.evaluation import EvaluationConfig
        from workbench.pipelines.bench import BenchConfig
        from workbench.pipelines.calibrate import CalibrationConfig

        if SMALL:  # three methods, one target, 4 prompts, one calibration setting
            CONFIG = BenchConfig(
                methods=("none", "prompt-en", "diffmean"), targets=("es",), n_prompts=4,
                evaluation=EvaluationConfig(max_new_tokens=8, n_utility_texts=3, bootstrap_resamples=200),
                calibration=CalibrationConfig(n_prompts=4, max_new_tokens=8, n_utility_texts=2, layers=(4,),
                                              strengths=(1.0,)))
        else:      # the README's table: 64 prompts, 32 greedy tokens, Hindi and Spanish, a DiffMean sweep
            CONFIG = BenchConfig(
                methods=("none", "prompt-en", "prompt-native", "diffmean", "pca", "lda", "probe", "lape"),
                targets=("hi", "es"), n_prompts=64, evaluation=EvaluationConfig(max_new_tokens=32),
                sweep_methods=("diffmean",), sweep_layers=(2, 4, 6, 8), sweep_strengths=(0.5, 1.0, 1.5))
    """),
    _LOAD_MODEL,
    code("""
        from workbench.pipelines.bench import leaderboard_markdown, run_bench

        result = run_bench(model, CONFIG, OUT / "bench", progress=PROGRESS)
    """),
    md("""
        ## Leaderboard

        Per target, methods ranked by steering score (harmonic mean of LID success and relevance) at their
        calibrated setting, with 95% intervals.
    """),
    code("""
        from IPython.display import Markdown

        Markdown(leaderboard_markdown(result, CONFIG))
    """),
    md("""
        ## The results table

        One row per evaluated setting (`selection`: `fixed`, `calibrated on dev`, or `sweep`), every metric with its
        interval bounds; also written to `results.csv`.
    """),
    code("""
        result.table
    """),
    code("""
        from workbench.pipelines.bench import method_language_figure

        method_language_figure(result.table)
    """),
    md("""
        ## What calibration saw on dev
    """),
    code("""
        import pandas as pd

        pd.DataFrame([{"target": target, "method": method, **row}
                      for target, by_method in result.calibrations.items()
                      for method, calibration in by_method.items() for row in calibration["sweep"]])
    """),
    md("""
        ## Outputs

        Each evaluation under `runs/` keeps its per-prompt records: the prompt as the model saw it (prompting
        baselines rewrite it), the output, its identified language and whether it retrieves its own prompt.
    """),
    code("""
        import json

        runs = [json.loads(path.read_text()) for path in sorted((OUT / "bench" / "runs").glob("*.json"))]
        records = pd.DataFrame([{"method": run["provenance"]["method"], "target": run["target"], **record}
                                for run in runs for record in run["records"]])
        records[["method", "target", "model_prompt", "output", "lid", "relevant"]]
    """),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_foxp2_walkthrough.ipynb": FOXP2,
    "03_neuron_study.ipynb": NEURONS,
    "04_feature_ablation.ipynb": FEATURES,
    "05_method_comparison.ipynb": BENCH,
}


def build(name: str) -> NotebookNode:
    """The notebook ``name`` (a key of :data:`NOTEBOOKS`), without outputs, with stable cell ids."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    stem = name.split("_")[0]
    for index, (kind, source) in enumerate(NOTEBOOKS[name]):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = f"nb{stem}-{index:02d}"
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def build_all() -> dict[str, NotebookNode]:
    return {name: build(name) for name in NOTEBOOKS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed notebooks")
    parser.add_argument("--out", type=Path, default=NOTEBOOK_DIR, help="directory of the notebooks")
    args = parser.parse_args(argv)
    stale = []
    for name, notebook in build_all().items():
        path = args.out / name
        text = nbformat.writes(notebook) + "\n"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run python scripts/build_notebooks.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
