"""Steering vectors exported as llama.cpp control vectors and safetensors: the file formats, the layer mapping
(``direction.<L>`` is added at ``blocks.{L}.hook_resid_post``), LAPE as vectors, and the bad inputs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import typer
from conftest import devanagari_tokens, make_tiny_cfg
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from safetensors import safe_open
from typer.testing import CliRunner

from workbench.errors import WorkbenchError
from workbench.export import (
    VECTOR_METHODS,
    ExportConfig,
    ExportedVectors,
    ExportError,
    mlp_write_changes,
    read_gguf,
    read_safetensors,
    steering_vectors,
    vector_method,
    write_gguf,
    write_safetensors,
)
from workbench.export_cli import export_command
from workbench.interventions import ALL_POSITIONS, AblateDirection, AddVector, Intervention, PositionRule, add_vector
from workbench.methods import Treatment
from workbench.neurons.interventions import Deactivate, NeuronIntervention, SetGate


def _vectors(layers: tuple[int, ...], d: int = 16) -> ExportedVectors:
    return ExportedVectors("tiny", "diffmean", "es", "en", layers, torch.randn(len(layers), d), 1.5, False,
                           "diffmean en->es", {"split": "discovery", "rows": 96})


def test_gguf_is_a_llama_cpp_control_vector_with_each_vector_at_direction_of_its_layer_and_no_other(tmp_path):
    vectors = _vectors((1, 3))
    path = write_gguf(vectors, tmp_path / "es.gguf", model_hint="gemma3")
    reader = GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "gemma3"
    count = reader.fields["controlvector.layer_count"]
    assert count.types == [GGUFValueType.UINT32] and count.contents() == 2
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert set(tensors) == {"direction.1", "direction.3"}                # only the layers that carry a vector
    for layer in (1, 3):
        assert tensors[f"direction.{layer}"].data.dtype == np.float32
        np.testing.assert_array_equal(tensors[f"direction.{layer}"].data, vectors.vector(layer).numpy())
    read = read_gguf(path)
    assert read.model_hint == "gemma3" and read.layer_count == 2 and set(read.directions) == {1, 3}
    assert read.hook_name(3) == "blocks.3.hook_resid_post" and read.metadata["method"] == "diffmean"
    assert json.loads(read.metadata["hook_names"]) == ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    assert read.metadata["strength"] == "1.5" and not list(tmp_path.glob(".*.tmp"))


def test_layer_zero_cannot_be_a_control_vector_but_can_be_safetensors(tmp_path):
    vectors = _vectors((0, 2))
    with pytest.raises(ExportError, match="cannot steer layer 0"):
        write_gguf(vectors, tmp_path / "v.gguf")
    assert not (tmp_path / "v.gguf").exists()
    back = read_safetensors(write_safetensors(vectors, tmp_path / "v.safetensors"))
    assert back.layers == (0, 2) and torch.equal(back.vectors, vectors.vectors)


def test_safetensors_round_trip_keeps_vectors_by_hook_name_and_the_metadata(tmp_path):
    vectors = _vectors((2, 5))
    path = write_safetensors(vectors, tmp_path / "es.safetensors")
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        assert set(handle.keys()) == {"blocks.2.hook_resid_post", "blocks.5.hook_resid_post"}
    assert {"model", "hook_names", "strength", "method", "data", "workbench_version"} <= set(metadata)
    assert json.loads(metadata["data"]) == {"rows": 96, "split": "discovery"} and metadata["model"] == "tiny"
    back = read_safetensors(path)
    assert back == ExportedVectors(**{**vectors.__dict__, "vectors": back.vectors})
    assert torch.equal(back.vectors, vectors.vectors)


def test_files_that_are_not_control_vectors_are_refused(tmp_path):
    writer = GGUFWriter(tmp_path / "model.gguf", "llama")
    writer.add_tensor("direction.1", np.zeros(4, dtype=np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file, writer.close):
        step()
    with pytest.raises(ExportError, match="general.architecture is 'llama'"):
        read_gguf(tmp_path / "model.gguf")
    writer = GGUFWriter(tmp_path / "zero.gguf", "controlvector")
    writer.add_tensor("direction.0", np.zeros(4, dtype=np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file, writer.close):
        step()
    with pytest.raises(ExportError, match="n >= 1"):
        read_gguf(tmp_path / "zero.gguf")
    save_path = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(save_path))
    with pytest.raises(ExportError, match="not a workbench steering export"):
        read_safetensors(save_path)


@pytest.mark.parametrize("name", ["clas", "prompt-native", "foxp2", "lape", "none", "nonsense"])
def test_a_method_without_a_vector_form_is_refused_naming_those_with_one(name):
    with pytest.raises(ExportError, match=f"method '{name}' has no vector form.*diffmean, pca, lda, probe"):
        vector_method(name)


@dataclass
class _Fixed:
    """A stand-in method whose treatment is fixed interventions (strength scales an added vector)."""

    vector: torch.Tensor
    name: str = "fixed"
    tunable: bool = True
    default_rule: PositionRule = ALL_POSITIONS
    edit: Any = None
    calls: list = field(default_factory=list)

    def layer_grid(self, model):
        return [1]

    def strength_grid(self):
        return [1.0]

    def fingerprint(self):
        return {}

    def treatment(self, model, target, source, *, layer, strength, rule):
        self.calls.append((layer, strength, str(rule)))
        edit = self.edit or AddVector(self.vector, strength)
        return Treatment(interventions=(Intervention(f"blocks.{layer}.hook_resid_post", edit, rule),),
                         description="fixed", provenance={"data": "none"})


def test_the_exported_vector_added_where_llama_cpp_adds_it_reproduces_the_treatment(tiny_model, tmp_path):
    method = _Fixed(torch.randn(16))
    vectors = steering_vectors(tiny_model, "diffmean", "es", layer=1, strength=2.0, steering=method)
    assert method.calls == [(1, 2.0, "all")] and not vectors.calibrated and vectors.model == "custom"
    assert vectors.layers == (1,) and torch.equal(vectors.vector(1), 2.0 * method.vector)
    control = read_gguf(write_gguf(vectors, tmp_path / "v.gguf"))
    assert set(control.directions) == {1}
    tokens = torch.tensor([[1, 5, 9, 2]])
    treatment = method.treatment(tiny_model, "es", "en", layer=1, strength=2.0, rule=ALL_POSITIONS)
    with torch.inference_mode():
        with tiny_model.hooks(fwd_hooks=[hook for i in treatment.interventions for hook in i.hooks(tiny_model)]):
            steered = tiny_model(tokens)
        with tiny_model.hooks(fwd_hooks=[add_vector(tiny_model, control.hook_name(1), control.directions[1])]):
            exported = tiny_model(tokens)
    torch.testing.assert_close(exported, steered)
    with pytest.raises(ExportError, match="layer 2 outside 0..1"):
        steering_vectors(tiny_model, "diffmean", "es", layer=2, strength=1.0, steering=method)
    with pytest.raises(ExportError, match="not a vector added at a resid_post site"):
        steering_vectors(tiny_model, "pca", "es", layer=1, strength=1.0,
                         steering=_Fixed(torch.randn(16), edit=AblateDirection(torch.randn(16))))


def test_lape_edits_as_vectors_are_each_layer_s_mean_mlp_output_change_exact_on_one_token():
    torch.manual_seed(0)
    from transformer_lens import HookedTransformer

    model = HookedTransformer(make_tiny_cfg(use_normalization_before_and_after=True)).eval()   # Gemma's post-norm
    edits = [NeuronIntervention(0, SetGate(torch.tensor([1, 4, 30]), torch.tensor([2.0, -0.5, 1.0]))),
             NeuronIntervention(1, Deactivate(torch.tensor([0, 7, 8])))]
    token, mask = torch.tensor([[11]]), torch.ones(1, 1, dtype=torch.long)
    vectors = mlp_write_changes(model, edits, [(token, mask)])
    assert set(vectors) == {0, 1} and all(vector.norm() > 0 for vector in vectors.values())
    with torch.inference_mode():
        with model.hooks(fwd_hooks=[hook for edit in edits for hook in edit.hooks(model)]):
            steered = model(token)
        with model.hooks(fwd_hooks=[add_vector(model, f"blocks.{layer}.hook_resid_post", vector)
                                    for layer, vector in vectors.items()]):
            added = model(token)
    torch.testing.assert_close(added, steered, atol=1e-5, rtol=1e-5)
    longer = torch.tensor([[11, 3, 5], [8, 2, 0]])
    padded = mlp_write_changes(model, edits, [(longer, torch.tensor([[1, 1, 1], [1, 1, 0]]))])
    alone = [mlp_write_changes(model, edits, [(longer[i:i + 1, :n], torch.ones(1, n, dtype=torch.long))])
             for i, n in ((0, 3), (1, 2))]
    for layer in (0, 1):                                  # a token-weighted mean; padding does not count
        torch.testing.assert_close(padded[layer], (3 * alone[0][layer] + 2 * alone[1][layer]) / 5)


# ------------------------------------------------------------------------------------------------------- the CLI

def _cli() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("export")(export_command)
    app.command("noop")(lambda: None)
    return app


BAD_INPUTS = {
    "method without a vector form": ("--method clas --target hi --format gguf --out {tmp}/v.gguf",
                                     "method 'clas' has no vector form to export; methods with one: diffmean"),
    "unknown target": ("--method diffmean --target xx --format gguf --out {tmp}/v.gguf", "'xx'"),
    "target is the source": ("--method diffmean --target en --format gguf --out {tmp}/v.gguf", "both 'en'"),
    "unknown format": ("--method diffmean --target hi --format onnx --out {tmp}/v.onnx",
                       "format must be one of gguf, safetensors, got 'onnx'"),
    "suffix not the format's": ("--method diffmean --target hi --format gguf --out {tmp}/v.safetensors",
                                "does not end in .gguf"),
    "layer 0 in a control vector": ("--method diffmean --target hi --layer 0 --format gguf --out {tmp}/v.gguf",
                                    "--layer 0 cannot be written as a llama.cpp control vector"),
    "negative layer": ("--method pca --target hi --layer -1 --format safetensors --out {tmp}/v.safetensors",
                       "--layer must be a block index >= 0, got -1"),
    "NaN strength": ("--method diffmean --target hi --strength nan --format gguf --out {tmp}/v.gguf",
                     "--strength must be a finite number"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_export_input_is_one_clear_error_before_any_model_is_loaded(case, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("workbench.models.load_model", no_model)
    argv, message = BAD_INPUTS[case]
    result = CliRunner().invoke(_cli(), ["export", *argv.format(tmp=tmp_path).split()])
    assert isinstance(result.exception, WorkbenchError), (result.exception, result.output)
    assert message in str(result.exception) and not list(tmp_path.iterdir())


def test_a_layer_beyond_the_model_is_refused_once_it_is_loaded_before_any_data_is_built(tiny_model, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setattr("workbench.models.load_model", lambda *args, **kwargs: tiny_model)
    result = CliRunner().invoke(_cli(), ["export", "--method", "diffmean", "--target", "hi", "--layer", "2",
                                         "--strength", "1", "--format", "gguf", "--out", str(tmp_path / "v.gguf")])
    assert isinstance(result.exception, ExportError) and "layer 2 outside 0..1" in str(result.exception)


def test_every_vector_method_is_a_registered_method():
    assert {type(vector_method(name)).__name__ for name in VECTOR_METHODS} == {"DirectionMethod", "LapeSteering"}


# ------------------------------------------------------------------------------------------- the embedded model

@pytest.mark.model
def test_exported_diffmean_at_its_llama_cpp_index_reproduces_the_workbench_s_steered_logits(gemma_fast, small_diffmean,
                                                                                           tmp_path, monkeypatch):
    from workbench import corpus
    from workbench.prompting import QA_TEMPLATE

    monkeypatch.setattr("workbench.models.load_model", lambda *args, **kwargs: gemma_fast)
    path = tmp_path / "es.gguf"
    result = CliRunner().invoke(_cli(), ["export", "--method", "diffmean", "--target", "es", "--layer", "6",
                                         "--strength", "1.5", "--format", "gguf", "--out", str(path)])
    assert result.exit_code == 0, (result.exception, result.output)
    assert "--control-vector-scaled" in result.output and "--control-vector-layer-range 6 6" in result.output
    control = read_gguf(path)
    assert set(control.directions) == {6} and control.model_hint == control.metadata["model"]
    assert control.directions[6].shape == (gemma_fast.cfg.d_model,)
    treatment = small_diffmean.treatment(gemma_fast, "es", "en", layer=6, strength=1.5, rule=ALL_POSITIONS)
    tokens = gemma_fast.to_tokens([QA_TEMPLATE.format(prompt=corpus.prompts("eval", n=1)[0].prompt)])
    with torch.inference_mode():
        base = gemma_fast(tokens)
        with gemma_fast.hooks(fwd_hooks=[h for i in treatment.interventions for h in i.hooks(gemma_fast)]):
            steered = gemma_fast(tokens)
        with gemma_fast.hooks(fwd_hooks=[add_vector(gemma_fast, control.hook_name(6), control.directions[6])]):
            exported = gemma_fast(tokens)
    torch.testing.assert_close(exported, steered)
    assert (steered - base).abs().max() > 1.0                              # the vector does steer
    safetensors = tmp_path / "es.safetensors"
    result = CliRunner().invoke(_cli(), ["export", "--method", "diffmean", "--target", "es", "--layer", "6",
                                         "--strength", "1.5", "--format", "safetensors", "--out", str(safetensors)])
    assert result.exit_code == 0, (result.exception, result.output)
    back = read_safetensors(safetensors)
    assert back.hook_names == ("blocks.6.hook_resid_post",) and back.method == "diffmean" and back.strength == 1.5
    assert torch.equal(back.vector(6), control.directions[6]) and back.data["split"] == "discovery"


@pytest.mark.model
def test_neuron_edits_as_vectors_through_gemma_s_post_norm_are_exact_on_one_token(gemma_fast):
    edits = [NeuronIntervention(4, SetGate(torch.tensor([3, 100, 2047]), torch.tensor([1.5, -0.1, 0.0]))),
             NeuronIntervention(16, Deactivate(torch.arange(0, 2048, 16)))]
    token = gemma_fast.to_tokens(["Hello"])[:, -1:]
    vectors = mlp_write_changes(gemma_fast, edits, [(token, torch.ones_like(token))])
    assert set(vectors) == {4, 16}
    with torch.inference_mode():
        with gemma_fast.hooks(fwd_hooks=[hook for edit in edits for hook in edit.hooks(gemma_fast)]):
            steered = gemma_fast(token)
        with gemma_fast.hooks(fwd_hooks=[add_vector(gemma_fast, f"blocks.{layer}.hook_resid_post", vector)
                                         for layer, vector in vectors.items()]):
            added = gemma_fast(token)
        base = gemma_fast(token)
    torch.testing.assert_close(added, steered, atol=1e-3, rtol=1e-4)
    assert (steered - base).abs().max() > 0.1


@pytest.mark.model
@pytest.mark.slow  # LAPE's neuron statistics (2,000 tokens x 3 languages, then cached in the store): ~1-2 min
def test_lape_vector_on_the_embedded_model_moves_the_next_token_towards_hindi(gemma_fast):
    from workbench.neurons.data import TokenDataConfig
    from workbench.neurons.methods import LapeSteering

    lape = LapeSteering(languages=("en", "hi", "zh"), tokens=TokenDataConfig(tokens_per_language=2000))
    vectors = steering_vectors(gemma_fast, "lape-vector", "hi", strength=1.0, steering=lape,
                               config=ExportConfig(n_prompts=8))
    assert vectors.method == "lape-vector" and len(vectors.layers) >= 2 and not vectors.calibrated
    assert vectors.data["averaged_over"]["n_prompts"] == 8 and vectors.data["method"] == "lape"
    devanagari = devanagari_tokens(gemma_fast)
    tokens = gemma_fast.to_tokens(["Q: How do I open a new document?\nA:"])

    def hindi_mass(hooks):
        with torch.inference_mode(), gemma_fast.hooks(fwd_hooks=hooks):
            return float(gemma_fast(tokens)[0, -1].softmax(-1)[devanagari].sum())

    added = [add_vector(gemma_fast, hook, vector)
             for hook, vector in zip(vectors.hook_names, vectors.vectors, strict=True)]
    base, steered = hindi_mass([]), hindi_mass(added)
    assert base < 0.05 and steered > base + 0.2, (base, steered)
