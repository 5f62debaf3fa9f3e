"""The bad-input catalogue: every case is one row. Each command must stop with exit code 2 and one line on stderr
that names the problem, with no traceback, before any model is loaded, and leave every existing file untouched."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from workbench.cli import main


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(content)


def _sae_dir(root: Path, *, config: bytes | None = None, truncate: bool = False) -> None:
    """An SAELens-shaped folder under ``root/sae/<hook>/``: cfg.json and sae_weights.safetensors."""
    folder = root / "sae" / "blocks.6.hook_resid_post"
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_bytes(config if config is not None else json.dumps(
        {"d_in": 640, "d_sae": 8, "architecture": "standard",
         "metadata": {"hook_name": "blocks.6.hook_resid_post"}}).encode())
    weights = folder / "sae_weights.safetensors"
    save_file({"W_enc": torch.zeros(640, 8), "W_dec": torch.zeros(8, 640)}, str(weights))
    if truncate:
        weights.write_bytes(weights.read_bytes()[:-1000])


def _checkpoint_without_weights(root: Path) -> None:
    (root / "ckpt").mkdir()
    (root / "ckpt" / "config.json").write_text('{"model_type": "gemma3_text", "hidden_size": 640}')


@dataclass(frozen=True)
class Case:
    argv: str
    """The command line after ``workbench`` (``{tmp}`` is the case's directory)."""
    message: str
    """A fragment the one-line error must contain."""
    setup: Callable[[Path], None] | None = None


CASES: dict[str, Case] = {
    "mistyped command": Case("stor", "No such command 'stor'"),
    "negative token count": Case("steer --target hi --prompt hi --max-new-tokens -3",
                                 "--max-new-tokens must be a positive integer, got -3"),
    "zero token count": Case("steer --target hi --prompt hi --max-new-tokens 0", "--max-new-tokens must be a positive"),
    "too few tokens for dM with --json": Case("steer --target hi --prompt hi --max-new-tokens 2 --json",
                                              "max_new_tokens=2 is fewer than the 3 steps"),
    "NaN strength": Case("steer --target hi --prompt hi --strength nan", "--strength must be a finite number"),
    "infinite strength": Case("steer --target hi --prompt hi --strength inf", "--strength must be a finite number"),
    "not a number": Case("steer --target hi --prompt hi --strength abc", "Invalid value for '--strength'"),
    "target equals source": Case("steer --source es --target es --prompt hi", "both 'es'"),
    "unknown target language": Case("steer --target xx --prompt hi", "'xx'"),
    "unknown method": Case("steer --method diffmaen --target hi --prompt hi", "diffmaen"),
    "unknown position rule": Case("steer --target hi --prompt hi --positions middle", "middle"),
    "whitespace prompt": Case("steer --target hi --prompt '   '", "--prompt 1 is empty or whitespace only"),
    "no prompts": Case("steer --target hi", "no prompts"),
    "missing prompts file": Case("steer --target hi --prompts-file {tmp}/none.txt", "does not exist"),
    "bad JSON line": Case("steer --target hi --prompts-file {tmp}/p.jsonl", "line 2 of", _write(
        "p.jsonl", b'{"prompt": "What is a cell?"}\n{"prompt": \n')),
    "JSON line without prompt": Case("steer --target hi --prompts-file {tmp}/p.jsonl",
                                     "line 2 of", _write("p.jsonl", b'{"prompt": "a"}\n{"text": "b"}\n')),
    "prompts file not UTF-8": Case("steer --target hi --prompts-file {tmp}/p.txt", "is not UTF-8",
                                   _write("p.txt", b"first\ncaf\xe9\n")),
    "unknown model": Case("info --model gemma-3-270mm", "unknown model 'gemma-3-270mm'"),
    "unknown backend": Case("info --backend turbo", "unknown backend 'turbo'"),
    "model folder without config": Case("info --model {tmp}", "holds no config.json"),
    "model folder without weights": Case("info --model {tmp}/ckpt", "holds config.json but no weights",
                                         _checkpoint_without_weights),
    "SAE folder missing": Case("sae eval {tmp}/nothing", "no SAE directory"),
    "SAE config not JSON": Case("sae eval {tmp}/sae", "is not valid JSON",
                                lambda root: _sae_dir(root, config=b"{not json")),
    "SAE weights truncated": Case("sae eval {tmp}/sae", "cannot be read",
                                  lambda root: _sae_dir(root, truncate=True)),
    "SAE site absent": Case("sae eval {tmp}/sae --sites 3.resid_post", "no SAE for blocks.3.hook_resid_post",
                            _sae_dir),
    "features on a truncated SAE": Case("features --target hi --sae-dir {tmp}/sae --out {tmp}/out",
                                        "cannot be read", lambda root: _sae_dir(root, truncate=True)),
    "ablate on a broken SAE config": Case("ablate --sae-dir {tmp}/sae --site 6.resid_post --feature 1",
                                          "is not valid JSON", lambda root: _sae_dir(root, config=b"[")),
    "features with two SAE sources": Case("features --target hi --sae-dir {tmp}/sae --sae-release r --sae-id i "
                                          "--out {tmp}/out", "either as --sae-dir DIR or as --sae-release", _sae_dir),
    "features with a release but no id": Case("features --target hi --sae-release r --out {tmp}/out",
                                              "either as --sae-dir DIR or as --sae-release"),
    "FOXP2 on a truncated SAE": Case("foxp2 --target hi --saes {tmp}/sae --out {tmp}/out", "cannot be read",
                                     lambda root: _sae_dir(root, truncate=True)),
    "SAE expansion factor zero": Case("sae train --sites 6.resid_post --out {tmp}/out --expansion-factor 0",
                                      "give a multiple > 0"),
    "SAE Q/A share above 1": Case("sae train --sites 6.resid_post --out {tmp}/out --qa-share 1.5",
                                  "give a share in [0, 1]"),
    "SAE size zero": Case("sae train --sites 6.resid_post --out {tmp}/out --d-sae 0", "--d-sae must be a positive"),
    "SAE learning rate NaN": Case("sae train --sites 6.resid_post --out {tmp}/out --lr nan",
                                  "--lr must be a finite number"),
    "FOXP2 NaN bound": Case("foxp2 --target hi --max-kl nan --out {tmp}/out", "--max-kl must be a finite number"),
    "FOXP2 strengths not numbers": Case("foxp2 --target hi --strengths abc --out {tmp}/out",
                                        "--strengths: 'abc' is not a number"),
    "FOXP2 negative strength": Case("foxp2 --target hi --strengths 0.1,-1 --out {tmp}/out",
                                    "--strengths must be at least 0"),
    "FOXP2 target is the source": Case("foxp2 --target en --out {tmp}/out", "both 'en'"),
    "FOXP2 no pairs": Case("foxp2 --target hi --pairs 0 --out {tmp}/out", "--pairs must be a positive"),
    "FOXP2 unknown units": Case("foxp2 --target hi --units percent --out {tmp}/out",
                                "'percent'; use one of residual-norm, raw"),
    "FOXP2 reversed window": Case("foxp2 --target hi --window 9-4 --out {tmp}/out", "give FIRST-LAST layers"),
    "FOXP2 unknown window search": Case("foxp2 --target hi --window-search best --out {tmp}/out",
                                        "'best'; use one of grid, stage2, none"),
    "FOXP2 negative beta": Case("foxp2 --target hi --betas 0,-0.5 --out {tmp}/out", "--betas must be at least 0"),
    "FOXP2 unknown matching": Case("foxp2 --target hi --matchings norm --out {tmp}/out",
                                   "unknown matching(s) ['norm']; known: edit-norm, kl"),
    "FOXP2 unreadable extra positions": Case("foxp2 --target hi --also-positions last --out {tmp}/out",
                                             "cannot read position rule 'last'"),
    "transfer unknown task": Case("transfer --task qa --out {tmp}/out", "unknown task 'qa'; known: module, translate"),
    "transfer unknown intervention": Case("transfer --methods lape-max --out {tmp}/out",
                                          "unknown interventions ['lape-max']"),
    "transfer English target": Case("transfer --targets en,hi --out {tmp}/out", "other than en"),
    "transfer unknown language": Case("transfer --targets hi,xx --out {tmp}/out", "xx"),
    "transfer translate with LoRA": Case("transfer --task translate --adapt lora --out {tmp}/out",
                                         "translate uses the base model"),
    "transfer zero eval rows": Case("transfer --n-eval 0 --out {tmp}/out", "--n-eval must be a positive"),
    "transfer compare without items": Case("transfer-compare {tmp} {tmp}", "items.csv does not exist"),
    "unknown device map strategy": Case("steer --target hi --prompt hi --device-map everywhere",
                                        "unknown device_map 'everywhere'"),
    "device map naming a missing GPU": Case("""steer --target hi --prompt hi --device-map '{{"model.layers.0": 3}}'""",
                                            "device_map['model.layers.0']"),
    "unreadable device map": Case("bench --targets hi --device-map '{{layers: 0' --out {tmp}/out",
                                  "cannot read --device-map as JSON"),
    "unknown dtype": Case("foxp2 --target hi --dtype int8 --out {tmp}/out", "unknown dtype 'int8'"),
    "chat template the tokenizer lacks": Case("steer --target hi --prompt hi --chat-template --layer 6 --strength 1",
                                              "has no chat template"),
    "export a method without a vector": Case("export --method clas --target hi --format gguf --out {tmp}/v.gguf",
                                             "has no vector form"),
    "export suffix and format disagree": Case("export --method diffmean --target hi --format gguf "
                                              "--out {tmp}/v.safetensors", "does not end in .gguf"),
    "export block 0 as a control vector": Case("export --method diffmean --target hi --layer 0 --format gguf "
                                               "--out {tmp}/v.gguf", "cannot be written as a llama.cpp control"),
    "harvest unknown language": Case("harvest --langs en,xx --sites mlp_pre --out {tmp}/out", "xx"),
    "harvest zero tokens": Case("harvest --langs en,hi --sites mlp_pre --n-tokens 0 --out {tmp}/out",
                                "--n-tokens must be a positive"),
    "bench zero prompts": Case("bench --targets hi --n-prompts 0 --out {tmp}/out", "--n-prompts must be a positive"),
    "bench target is the source": Case("bench --targets en --out {tmp}/out", "also the source"),
    "bench repeated target": Case("bench --targets hi,hi --out {tmp}/out", "--targets lists hi more than once"),
    "bench sweep strengths not numbers": Case("bench --targets hi --sweep-strengths x --out {tmp}/out",
                                              "'x' is not a number"),
    "bench unknown method": Case("bench --methods diffmean,lapee --targets hi --out {tmp}/out", "lapee"),
    "bench target without contexts": Case("bench --targets ar --out {tmp}/out", "question/answer contexts"),
    "neurons one language": Case("neurons lape --langs en --out {tmp}/out", "at least two language codes"),
    "neurons repeated language": Case("neurons lape --langs en,hi,en --out {tmp}/out", "lists en more than once"),
    "neurons rate above one": Case("neurons lape --top-rate 2 --out {tmp}/out", "--top-rate must be a fraction"),
    "neurons no tokens": Case("neurons ap90 --tokens 0 --out {tmp}/out", "--tokens must be a positive"),
    "card for a missing SAE": Case("card feature --sae-dir {tmp}/nothing --latent 1 --out {tmp}/out/c.html",
                                   "no SAE directory"),
    "card for a negative latent": Case("card feature --sae-dir {tmp}/sae --latent -1 --out {tmp}/out/c.html",
                                       "--latent must be >= 0", _sae_dir),
    "card on a truncated SAE": Case("card feature --sae-dir {tmp}/sae --latent 1 --out {tmp}/out/c.html",
                                    "cannot be read", lambda root: _sae_dir(root, truncate=True)),
    "neuron card, negative layer": Case("card neuron --layer -1 --neuron 3 --out {tmp}/out/n.html", "must be >= 0"),
    "neuron card, repeated language": Case("card neuron --layer 1 --neuron 3 --languages hi,hi --out {tmp}/out/n.html",
                                           "--languages lists hi more than once"),
    "view with the source as target": Case("view mass --target en --out {tmp}/out/v.html", "both 'en'"),
    "view with no prompts": Case("view lens --target hi --n-prompts 0 --out {tmp}/out/v.html",
                                 "--n-prompts must be a positive"),
    "view with a NaN strength": Case("view lens --target hi --layer 4 --strength nan --out {tmp}/out/v.html",
                                     "--strength must be a finite number"),
    "relevance validation one row": Case("evaluation validate-relevance --n-rows 1 --out {tmp}/out",
                                         "--n-rows must be at least 2"),
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    if case.setup is not None:
        case.setup(tmp_path)
    before = _snapshot(tmp_path)
    import shlex

    monkeypatch.setattr("sys.argv", ["workbench", *shlex.split(case.argv.format(tmp=tmp_path))])
    for loader in ("_load_hooked", "_load_bridge", "_load_hf_hooked"):
        monkeypatch.setattr(f"workbench.models.{loader}", _no_model_loading)
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert stop.value.code == 2, captured
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("error: ") and case.message in lines[0], lines[0]
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


def _no_model_loading(*args, **kwargs):
    raise AssertionError("a bad input must be refused before any model is loaded")


@pytest.mark.parametrize("call, message", [
    (lambda: __import__("workbench.activations", fromlist=["batch_texts"]).batch_texts(
        None, {"en": "hello world"}), "map to a single string"),
    (lambda: __import__("workbench.corpus", fromlist=["parallel"]).parallel(["hi", "hi"]), "hi more than once"),
    (lambda: __import__("workbench.corpus", fromlist=["parallel"]).parallel("hi"), "got the string 'hi'"),
    (lambda: __import__("workbench.evaluation", fromlist=["EvaluationConfig"]).EvaluationConfig(
        max_new_tokens=2), "fewer than the 3 steps"),
    (lambda: __import__("workbench.evaluation", fromlist=["EvaluationConfig"]).EvaluationConfig(batch_size=0),
     "batch_size must be a positive integer"),
])
def test_bad_api_input_is_one_clear_error(call, message):
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match=message):
        call()


def test_a_fractional_site_layer_is_refused():
    """``Site(3.7, ...)`` once named ``blocks.3.7.hook_resid_post`` (the test run's type checker refuses the call
    before the dataclass does, so its own check is run directly)."""
    from workbench.sites import Site, SiteError

    site = object.__new__(Site)
    object.__setattr__(site, "layer", 3.7)
    object.__setattr__(site, "kind", "resid_post")
    with pytest.raises(SiteError, match="must be an integer >= 0, got 3.7"):
        site.__post_init__()


def test_json_output_is_valid_json_with_null_for_non_finite_numbers(tmp_path):
    from workbench.artifacts import atomic_write_json, json_text, nan_for_null

    payload = {"kl": math.nan, "ci": (math.inf, 0.5), "rows": [{"x": -math.inf}], "n": 3}
    assert json.loads(json_text(payload)) == {"kl": None, "ci": [None, 0.5], "rows": [{"x": None}], "n": 3}
    path = atomic_write_json(tmp_path / "m.json", payload)
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    revived = nan_for_null(json.loads(path.read_text()), ["kl", "ci"])
    assert math.isnan(revived["kl"]) and math.isnan(revived["ci"][0]) and revived["ci"][1] == 0.5


def test_a_stored_run_with_a_nan_metric_reads_back_as_nan():
    from workbench.evaluation.evaluate import NUMERIC_METRICS, SteeringMetrics

    assert {"kl", "relevance", "relevance_ci", "steering_score_ci"} <= set(NUMERIC_METRICS)
    revived = SteeringMetrics.revive({"relevance": None, "relevance_ci": [None, None], "target": "hi"})
    assert math.isnan(revived["relevance"]) and all(math.isnan(v) for v in revived["relevance_ci"])
    assert revived["target"] == "hi"


def test_nan_activations_are_caught_at_the_first_site_they_reach(tiny_model):
    from workbench.activations import HarvestError, TokenBatch, harvest

    def poison(activation, hook):
        activation[1, 2] = math.nan
        return activation

    batches = [TokenBatch(torch.randint(1, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long), ["en", "en"])
               for _ in range(3)]
    sites = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    harvest(tiny_model, batches, sites, progress=False)  # clean input passes
    calls = {"n": 0}

    def poison_second_batch(activation, hook):
        calls["n"] += 1
        return poison(activation, hook) if calls["n"] == 2 else activation

    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_mlp_out", poison_second_batch)]), pytest.raises(
            HarvestError, match=r"NaN or inf activations at blocks.0.hook_resid_post \(layer 0\) in batch 1"):
        harvest(tiny_model, batches, sites, progress=False)


def test_non_finite_logits_stop_the_evaluation_naming_the_first_prompt():
    from workbench.evaluation.evaluate import EvaluationError, _require_finite

    values = torch.zeros(4, 3, 2)
    _require_finite(values, "masses", "prompt")
    values[2, 1, 0] = math.inf
    with pytest.raises(EvaluationError, match="first at prompt 2, 1 of 4 prompts"):
        _require_finite(values, "masses", "prompt")


def test_an_sae_with_nan_weights_is_refused_on_load(tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from workbench.saes.config import SAEError
    from workbench.saes.io import load_sae

    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=16, metadata=SAEMetadata(hook_name="blocks.0.hook_resid_post")))
    with torch.no_grad():
        sae.W_dec[3, 2] = math.nan
    sae.save_model(tmp_path / "sae")
    with pytest.raises(SAEError, match="parameter W_dec holds NaN or inf"):
        load_sae(tmp_path / "sae")


def _saved_harvest(directory: Path, model) -> type:
    from workbench.activations import ActivationStats, TokenBatch, harvest

    batches = [TokenBatch(torch.randint(1, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long), ["en", "en"])]
    harvest(model, batches, ["blocks.0.hook_resid_post"], progress=False).save(directory)
    return ActivationStats


def _saved_mask(directory: Path, model) -> type:
    from workbench.neurons.masks import NeuronMask

    NeuronMask(mask=torch.zeros(2, 4, 2, dtype=torch.bool), languages=("en", "hi"), method="lape",
               config={}).save(directory)
    return NeuronMask


@pytest.mark.parametrize("save, files", [(_saved_harvest, ("stats.json", "stats.safetensors")),
                                         (_saved_mask, ("mask.json", "mask.safetensors"))])
@pytest.mark.parametrize("damage", ["truncated tensors", "broken json"])
def test_a_corrupt_saved_artifact_is_one_error_naming_the_file(save, files, damage, tmp_path, tiny_model):
    """User-provided artifacts (a saved harvest, a neuron mask) are not store entries: a damaged one is an error
    that names the file, not a library traceback."""
    from workbench.artifacts import ArtifactError

    artifact = save(tmp_path, tiny_model)
    artifact.load(tmp_path)  # the undamaged artifact loads
    record, tensors = (tmp_path / name for name in files)
    if damage == "truncated tensors":
        tensors.write_bytes(tensors.read_bytes()[:-16])
        expected = f"{tensors} cannot be read"
    else:
        record.write_text(record.read_text()[:-10])
        expected = f"{record} is not valid JSON"
    with pytest.raises(ArtifactError, match=re.escape(expected)):
        artifact.load(tmp_path)


def test_nan_activations_reaching_an_sae_stop_the_feature_statistics(tiny_model):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from workbench.activations import TokenBatch
    from workbench.features.encode import FeatureError, firing_rates

    sae = StandardSAE(StandardSAEConfig(d_in=16, d_sae=32, metadata=SAEMetadata(
        hook_name="blocks.1.hook_resid_post"))).eval()
    saes = {"blocks.1.hook_resid_post": sae}
    batches = [TokenBatch(torch.randint(1, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long), ["en", "en"])
               for _ in range(2)]
    rates = firing_rates(tiny_model, saes, batches, progress=False)
    assert torch.isfinite(rates["blocks.1.hook_resid_post"]).all()

    def poison(activation, hook):
        activation[0, 3] = math.inf
        return activation

    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", poison)]), pytest.raises(
            FeatureError, match="NaN or inf SAE latents at blocks.1.hook_resid_post in batch 0"):
        firing_rates(tiny_model, saes, batches, progress=False)
