"""The SAE and feature commands end to end (CliRunner) on a tiny model with the real Gemma tokenizer.

The model is a 2-layer HookedTransformer with Gemma's 262k vocabulary, so the whole corpus pipeline (token
budgets, token sets, prompts, LangFIR's random tokens, held-out CE) runs for real, in seconds.
"""

from __future__ import annotations

import json

import pytest
import torch
import typer
from conftest import make_tiny_cfg
from sae_lens import SAE
from transformer_lens import HookedTransformer
from typer.testing import CliRunner

from workbench.features.cli import ablate_command, features_command
from workbench.saes.cli import sae_app

runner = CliRunner()
pytestmark = pytest.mark.slow  # ~1-2 minutes on 2 busy cores: the whole corpus pipeline runs


def command_app() -> typer.Typer:
    """The sub-commands mounted as the lead's ``workbench.cli`` mounts them."""
    app = typer.Typer()
    app.add_typer(sae_app, name="sae")
    app.command("features")(features_command)
    app.command("ablate")(ablate_command)
    return app


@pytest.fixture(scope="module")
def gemma_vocab_tiny():
    from workbench.models import load_tokenizer

    torch.manual_seed(0)
    model = HookedTransformer(make_tiny_cfg(d_vocab=262_144, n_ctx=128)).eval()
    model.tokenizer = load_tokenizer()
    return model


@pytest.fixture(scope="module")
def trained_dir(gemma_vocab_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_saes")
    mp = pytest.MonkeyPatch()
    mp.setattr("workbench.models.load_model", lambda *args, **kwargs: gemma_vocab_tiny)
    try:
        result = runner.invoke(command_app(), [
            "sae", "train", "--sites", "1.resid_post,1.mlp_post", "--out", str(out), "--d-sae", "64", "--k", "4",
            "--tokens", "2048", "--samples", "24576", "--batch-size", "256", "--lr", "0.005", "--languages", "en,hi",
            "--threads", "1", "--json"])
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    return out, json.loads(result.output[result.output.index("{"):])


def test_sae_train_writes_saelens_directories(trained_dir):
    out, rows = trained_dir
    assert set(rows) == {"blocks.1.hook_resid_post", "blocks.1.mlp.hook_post"}
    for name, row in rows.items():
        assert SAE.load_from_disk(str(out / name)).cfg.d_sae == 64
        assert row["tokens"] >= 2000 and row["fvu"] < 0.8 and not row["reused"]


def test_sae_eval_writes_quality_reports(trained_dir, gemma_vocab_tiny, monkeypatch):
    out, _ = trained_dir
    monkeypatch.setattr("workbench.models.load_model", lambda *args, **kwargs: gemma_vocab_tiny)
    result = runner.invoke(command_app(), ["sae", "eval", str(out), "--tokens", "600", "--ce-tokens", "40",
                                           "--sites", "1.resid_post", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "quality.json").read_text())["sites"]["blocks.1.hook_resid_post"]
    assert {"fvu", "l0", "dead_share", "ce_recovered_zero", "ce_recovered_mean"} <= report.keys()
    assert report["l0"] <= 4 and (out / "quality.html").is_file() and (out / "quality.csv").is_file()


def test_features_command_writes_the_documented_json(trained_dir, gemma_vocab_tiny, monkeypatch, tmp_path):
    out, _ = trained_dir
    monkeypatch.setattr("workbench.models.load_model", lambda *args, **kwargs: gemma_vocab_tiny)
    result = runner.invoke(command_app(), [
        "features", "--target", "hi", "--sae-dir", str(out), "--out", str(tmp_path), "--sites", "1.resid_post",
        "--n-pairs", "24", "--n-candidates", "3", "--n-prompts", "2", "--n-ablation", "1",
        "--ablation-tokens", "40"])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "features.json").read_text())
    assert payload["target"] == "hi"
    assert len(payload["candidates"]) == 6
    for feature in payload["features"]:
        assert {"site", "index", "selectivity", "lift", "score", "side"} <= feature.keys()
        assert feature["side"] in ("target", "english") and feature["score"] > 0
    for neuron in payload["neurons"]:
        assert {"layer", "index", "weight"} <= neuron.keys() and neuron["layer"] in (0, 1)
    for name in ("selectivity_lift.html", "layer_counts.html", "dashboard.html", "candidates.csv"):
        assert (tmp_path / name).is_file()


def test_unknown_language_and_site_are_clear_errors(trained_dir, gemma_vocab_tiny, monkeypatch, tmp_path):
    out, _ = trained_dir
    monkeypatch.setattr("workbench.models.load_model", lambda *args, **kwargs: gemma_vocab_tiny)
    result = runner.invoke(command_app(), ["features", "--target", "xx", "--sae-dir", str(out),
                                           "--out", str(tmp_path)])
    assert result.exit_code != 0 and "xx" in str(result.exception)
    result = runner.invoke(command_app(), ["ablate", "--sae-dir", str(out), "--site", "0.resid_post",
                                           "--feature", "1"])
    assert result.exit_code != 0 and "no SAE for blocks.0.hook_resid_post" in str(result.exception)


def test_ablate_command_reports_a_languages_vector(trained_dir, gemma_vocab_tiny, monkeypatch, tmp_path):
    out, _ = trained_dir
    monkeypatch.setattr("workbench.models.load_model", lambda *args, **kwargs: gemma_vocab_tiny)
    result = runner.invoke(command_app(), ["ablate", "--sae-dir", str(out), "--site", "1.resid_post",
                                           "--feature", "0", "--feature", "1", "--languages", "en,hi",
                                           "--tokens", "40", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "ablation.json").read_text())
    assert payload["languages"] == ["en", "hi"] and [f["index"] for f in payload["features"]] == [0, 1]
    assert all(set(f["delta_ce"]) == {"en", "hi"} for f in payload["features"])
    assert (tmp_path / "ablation_heatmap.html").is_file()
