"""Neuron methods on the real embedded model (small data): real effects, not just shapes."""

import json

import pytest
import torch
from conftest import devanagari_tokens
from typer.testing import CliRunner

from workbench.interventions import ALL_POSITIONS, hooks_for
from workbench.methods import get_method
from workbench.neurons.cache import NeuronRunConfig, cached_mask
from workbench.neurons.causal import CausalConfig, held_out_texts, mean_nll
from workbench.neurons.cli import app
from workbench.neurons.data import TokenDataConfig
from workbench.neurons.interventions import NeuronIntervention, SetGate, deactivate, random_like
from workbench.neurons.methods import LapeSteering

pytestmark = pytest.mark.model
LANGUAGES = ("en", "hi", "zh")
TOKENS = TokenDataConfig(tokens_per_language=2000)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("neuron-cache")


@pytest.fixture(scope="module")
def lape_mask(gemma_fast, cache):
    config = NeuronRunConfig(languages=LANGUAGES, tokens=TOKENS, run_causal=False, compare_methods=False)
    return cached_mask("lape", gemma_fast, config, cache_root=cache, progress=False)


def test_lape_gives_english_the_fewest_neurons(lape_mask):
    counts = lape_mask.per_language()
    assert lape_mask.n_selected == round(0.01 * 18 * 2048)
    assert counts["en"] < min(counts["hi"], counts["zh"]), counts


def test_deactivating_hindi_neurons_hurts_hindi_more_than_english_and_random_neurons(gemma_fast, lape_mask):
    config = CausalConfig(n_texts=6, max_length=48)
    texts = {code: held_out_texts(gemma_fast.tokenizer, code, config) for code in ("en", "hi")}
    hindi = lape_mask.of("hi")
    control = random_like(hindi, exclude=lape_mask.union(), generator=torch.Generator().manual_seed(0))
    base = {code: mean_nll(gemma_fast, texts[code], [], config) for code in texts}
    on_hindi = mean_nll(gemma_fast, texts["hi"], deactivate(hindi), config) - base["hi"]
    on_english = mean_nll(gemma_fast, texts["en"], deactivate(hindi), config) - base["en"]
    random_on_hindi = mean_nll(gemma_fast, texts["hi"], deactivate(control), config) - base["hi"]
    assert on_hindi > 0.5, on_hindi
    assert on_hindi > 10 * max(on_english, 0.01) and on_hindi > 10 * max(random_on_hindi, 0.01)


def test_set_gate_on_the_real_model_writes_value_times_up(gemma_fast):
    tokens = gemma_fast.to_tokens("Language neurons on the real model.")
    units, values = torch.tensor([3, 100, 2047]), torch.tensor([1.5, -0.1, 0.0])
    seen = {}
    hooks = [*NeuronIntervention(5, SetGate(units, values)).hooks(gemma_fast),
             ("blocks.5.mlp.hook_pre_linear", lambda a, hook: seen.setdefault("up", a.clone())),
             ("blocks.5.mlp.hook_post", lambda a, hook: seen.setdefault("post", a.clone()))]
    with torch.inference_mode(), gemma_fast.hooks(fwd_hooks=hooks):
        gemma_fast(tokens, stop_at_layer=6)
    torch.testing.assert_close(seen["post"][..., units], values * seen["up"][..., units])


def test_lape_steering_method_moves_the_next_token_towards_hindi(gemma_fast, cache, lape_mask):
    assert isinstance(get_method("lape"), LapeSteering)
    method = LapeSteering(languages=LANGUAGES, tokens=TOKENS, cache_root=cache)
    treatment = method.treatment(gemma_fast, "hi", "en", layer=None, strength=1.0, rule=ALL_POSITIONS)
    assert f"{lape_mask.per_language()['hi']} hi neurons" in treatment.description
    devanagari = devanagari_tokens(gemma_fast)
    tokens = gemma_fast.to_tokens(["Q: How do I open a new document?\nA:"])

    def hindi_mass(hooks):
        with torch.inference_mode(), gemma_fast.hooks(fwd_hooks=hooks):
            probabilities = gemma_fast(tokens)[0, -1].softmax(-1)
        return float(probabilities[devanagari].sum())

    base, steered = hindi_mass([]), hindi_mass(hooks_for(gemma_fast, treatment.interventions))
    assert base < 0.05 and steered > base + 0.2, (base, steered)


def test_cli_writes_mask_summary_and_figures(gemma_fast, cache, lape_mask, tmp_path, monkeypatch):
    monkeypatch.setattr("workbench.models.load_model", lambda *args, **kwargs: gemma_fast)
    out = tmp_path / "lape"
    result = CliRunner().invoke(app, ["lape", "--langs", "en,hi", "--tokens", "2000", "--no-compare",
                                      "--n-eval-texts", "2", "--cache", str(cache), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "lape" and set(summary["per_language"]) == {"en", "hi"}
    assert sum(summary["per_layer"]) == summary["n_selected"] == round(0.01 * 18 * 2048)
    assert set(summary["ppl_delta"]) == {"en", "hi"} and set(summary["ppl_delta_random"]["hi"]) == {"en", "hi"}
    assert summary["ppl_delta"]["hi"]["hi"] > summary["ppl_delta_random"]["hi"]["hi"]
    for name in ("mask/mask.safetensors", "mask/mask.json", "ppl_delta.csv", "ppl_delta.html",
                 "neurons_per_layer.html", "jaccard_languages.html", "gate_values.safetensors"):
        assert (out / name).is_file(), name
