"""Export a steering vector for other runtimes: a llama.cpp control vector (``.gguf``) or ``.safetensors``.

What is exported is what the workbench adds: for ``diffmean``, ``pca``, ``lda``, ``probe`` (and their ``-matched``
variants) the one vector their treatment adds at ``blocks.{L}.hook_resid_post``, times the strength (the strength is
baked into the vector: a runtime adds it as it is). ``lape-vector`` is LAPE's neuron edit turned into vectors (LAPE
itself sets act(gate) of neurons, which no fixed vector is): at every layer ``l`` the edit touches, the mean over
real tokens of the change the edit makes to that layer's MLP output, ``norm(post' @ W_out) - norm(post @ W_out)``
(the post-MLP RMSNorm included, :func:`workbench.backends.mlp_write_weights`), each layer's change measured at its
own site with every edit applied, over the weak prompts of :class:`ExportConfig` in the model's prompt format
(English questions: the text the workbench steers). The MLP output is added into ``blocks.{l}.hook_resid_post``,
so adding these vectors there reproduces LAPE exactly on a single token and its per-layer mean change on average
otherwise (it is an approximation of a token-dependent edit, not the edit). Methods without a vector form
(prompting, CLAS, FOXP2's sparse shift, ``lape`` itself...) are refused by :func:`vector_method` before any model is
loaded.

Where llama.cpp adds ``direction.<n>`` (read from ggml-org/llama.cpp):

* ``common/common.cpp``, ``common_control_vector_load_one``: ``direction.<n>`` is parsed for ``n``; ``n = 0`` is
  rejected ("invalid (zero) direction tensor layer index"), non-F32 or non-1-D tensors too; the tensor times the
  file's scale is accumulated at offset ``n_embd * (n - 1)`` of a buffer ("layer 1 at [0]"), zero-filled where no
  tensor is given.
* ``src/llama-adapter.cpp``, ``llama_adapter_cvec::apply``: ``tensors[il]`` for ``il = 1 .. n_layer - 1`` is read
  from offset ``n_embd * (il - 1)`` (``tensors[0]`` is always null), so ``tensors[il]`` holds ``direction.<il>``;
  ``llama_adapter_cvec::apply_to(ctx, cur, il)`` adds ``tensors[il]`` to ``cur`` when ``layer_start <= il <=
  layer_end`` (``--control-vector-layer-range``, default ``1 .. n_layer``).
* ``src/models/gemma3.cpp`` (``src/models/llama.cpp`` likewise): at the end of block ``il``, after
  ``cur = ggml_add(ctx0, cur, sa_out)`` (the post-FFN-norm MLP output added to the residual), ``cur =
  build_cvec(cur, il)`` (``src/llama-graph.cpp``: ``cvec->apply_to(ctx0, cur, il)``), then ``cb(cur, "l_out",
  il)`` and ``inpL = cur`` feeds block ``il + 1``.

So ``direction.<n>`` is added to the output of block ``n`` (0-based): TransformerLens ``blocks.{n}.hook_resid_post``,
at every position (prompt and generated tokens), and the output of block 0 cannot be steered. repeng's
``ControlVector.export_gguf`` agrees: it writes ``direction.{layer}`` for the hidden state after decoder layer
``layer``. :func:`write_gguf` writes ``direction.<L>`` for a vector the workbench adds at
``blocks.{L}.hook_resid_post`` and refuses ``L = 0``; it writes only the layers that carry a vector (llama.cpp adds
zero at the others), ``controlvector.layer_count`` is the number of ``direction`` tensors written (as repeng; llama.cpp
does not read it), and the workbench's own keys (``workbench.*``) ride along (llama.cpp ignores other keys). Use it
with ``llama-cli --control-vector-scaled FILE 1.0`` (scale 1 is the exported strength; ``--control-vector FILE`` is
the same) and, optionally, ``--control-vector-layer-range L L``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.artifacts import load_tensors, save_tensors
from workbench.backends import MLPWriteWeights, Model, device_of, forward_to, mlp_write_weights
from workbench.errors import WorkbenchError
from workbench.interventions import ALL_POSITIONS, AddVector, Intervention, Steer, hooks_for
from workbench.methods import SteeringMethod, get_method
from workbench.sites import Site

VECTOR_METHODS: tuple[str, ...] = ("diffmean", "pca", "lda", "probe", "pca-matched", "lda-matched", "probe-matched",
                                   "lape-vector")
"""Methods whose steering is (or is exported as) one residual vector per layer."""
FORMATS: tuple[str, ...] = ("gguf", "safetensors")
"""File formats :func:`write_vectors` writes (the file's suffix is the format's name)."""
SITE_KIND = "resid_post"
"""Where every exported vector is added: ``blocks.{layer}.hook_resid_post``."""


class ExportError(WorkbenchError):
    """A steering export that cannot be made: a method without a vector form, a layer or format a file cannot hold,
    or a file that is not an export."""


@dataclass(frozen=True)
class ExportConfig:
    """The text ``lape-vector`` averages LAPE's per-token MLP-output change over."""

    n_prompts: int = 64
    """Weak prompts (English questions in the model's prompt format) averaged over."""
    split: str = "discovery"
    """Corpus split of the prompts (never dev or eval)."""
    batch_size: int = 16
    """Prompts per forward pass."""
    max_length: int = 128
    """Tokens per prompt at most."""


@dataclass(frozen=True)
class ExportedVectors:
    """Residual vectors to add at ``blocks.{layer}.hook_resid_post`` at every position, with what they came from."""

    model: str
    """Name of the model the vectors were made for."""
    method: str
    """Method name (one of :data:`VECTOR_METHODS`)."""
    target: str
    """Language steered towards."""
    source: str
    """Language steered away from."""
    layers: tuple[int, ...]
    """Block index of each vector, ascending."""
    vectors: Float[Tensor, "n_vectors d_model"]
    """One float32 vector per layer, the strength included."""
    strength: float
    """The method's strength the vectors include."""
    calibrated: bool
    """Whether the layer and/or strength were chosen by the workbench's calibration on dev."""
    description: str
    """The treatment's one-line description."""
    data: dict[str, Any] = field(default_factory=dict)
    """What the vectors were fitted on (the treatment's provenance; for ``lape-vector`` also the averaged text)."""

    def __post_init__(self) -> None:
        if len(self.layers) != self.vectors.shape[0] or list(self.layers) != sorted(set(self.layers)):
            raise ExportError(f"layers {list(self.layers)} must be distinct, ascending and one per vector "
                              f"({self.vectors.shape[0]} vectors)")

    @property
    def hook_names(self) -> tuple[str, ...]:
        return tuple(Site(layer, SITE_KIND).hook_name for layer in self.layers)

    def vector(self, layer: int) -> Float[Tensor, " d_model"]:
        """The vector added at ``blocks.{layer}.hook_resid_post``."""
        if layer not in self.layers:
            raise ExportError(f"no exported vector at layer {layer}; layers: {list(self.layers)}")
        return self.vectors[self.layers.index(layer)]

    def metadata(self) -> dict[str, str]:
        """Every field but the vectors, as strings (safetensors metadata; ``workbench.*`` keys of a gguf file)."""
        from workbench import __version__

        return {"model": self.model, "method": self.method, "target": self.target, "source": self.source,
                "layers": json.dumps(list(self.layers)), "hook_names": json.dumps(list(self.hook_names)),
                "strength": repr(self.strength), "calibrated": json.dumps(self.calibrated),
                "description": self.description, "data": json.dumps(self.data, sort_keys=True, default=str),
                "positions": "all", "workbench_version": __version__}


def check_vector_method(name: str) -> str:
    """``name`` when it is one of :data:`VECTOR_METHODS`, else an :class:`ExportError` naming them."""
    if name not in VECTOR_METHODS:
        raise ExportError(f"method {name!r} has no vector form to export; methods with one: "
                          f"{', '.join(VECTOR_METHODS)}")
    return name


def vector_method(name: str) -> SteeringMethod:
    """The registered method behind ``name`` (``lape-vector``: ``lape``), checked first (nothing is loaded)."""
    return get_method("lape" if check_vector_method(name) == "lape-vector" else name)


def steering_vectors(model: Model, method: str, target: str, source: str = "en", *, layer: int | None = None,
                     strength: float | None = None, steering: SteeringMethod | None = None,
                     config: ExportConfig = ExportConfig()) -> ExportedVectors:
    """The residual vectors ``method`` adds for ``target`` vs ``source`` at ``layer`` and ``strength`` (positions
    ``all``); a missing layer or strength is the workbench's calibrated one (:func:`workbench.calibration.calibrate`
    on dev, as ``workbench steer`` does; slow on CPU). ``steering`` replaces the registered method instance (e.g. a
    direction method fitted on other data); ``config`` is the text ``lape-vector`` averages over."""
    check_vector_method(method)
    chosen = vector_method(method) if steering is None else steering
    if layer is not None and not 0 <= layer < model.cfg.n_layers:
        raise ExportError(f"layer {layer} outside 0..{model.cfg.n_layers - 1} of {model.cfg.n_layers}-layer model")
    calibrated = strength is None or (layer is None and None not in chosen.layer_grid(model))
    if calibrated:
        from workbench.calibration import calibrate

        calibration = calibrate(model, chosen, target, source, rule=ALL_POSITIONS)
        layer = calibration.layer if layer is None else layer
        strength = calibration.strength if strength is None else strength
    treatment = chosen.treatment(model, target, source, layer=layer, strength=strength, rule=ALL_POSITIONS)
    data = dict(treatment.provenance)
    if method == "lape-vector":
        by_layer = mlp_write_changes(model, treatment.interventions, prompt_batches(model, config))
        data["averaged_over"] = {"text": "weak prompts in the model's prompt format", **asdict(config)}
    else:
        by_layer = added_vectors(treatment.interventions)
    if not by_layer:
        raise ExportError(f"{method} adds nothing for {target} at layer {layer}: {treatment.description}")
    from workbench.models import model_metadata

    layers = tuple(sorted(by_layer))
    return ExportedVectors(str(model_metadata(model)["name"]), method, target, source, layers,
                           torch.stack([by_layer[index].detach().float().cpu() for index in layers]), float(strength),
                           calibrated, treatment.description, data)


def added_vectors(interventions: Sequence[Steer]) -> dict[int, Float[Tensor, " d_model"]]:
    """Layer -> the vector a treatment adds at ``blocks.{layer}.hook_resid_post`` (strength included); anything
    but :class:`AddVector` at a ``resid_post`` site is an :class:`ExportError`."""
    vectors: dict[int, Tensor] = {}
    for intervention in interventions:
        site = Site.parse(intervention.site) if isinstance(intervention, Intervention) else None
        if site is None or site.kind != SITE_KIND or not isinstance(intervention.edit, AddVector):
            raise ExportError(f"a {type(intervention).__name__} at {getattr(intervention, 'site', '?')} is not a "
                              "vector added at a resid_post site; only such edits export")
        added = intervention.edit.strength * intervention.edit.vector.float()
        vectors[site.layer] = vectors[site.layer] + added if site.layer in vectors else added
    return vectors


def prompt_batches(model: Model, config: ExportConfig) -> list[tuple[Tensor, Tensor]]:
    """The weak prompts of ``config`` in the model's prompt format, tokenised (right-padded) in batches: (ids,
    mask)."""
    from workbench import corpus
    from workbench.prompting import qa_prompt

    texts = [qa_prompt(model, p.prompt) for p in corpus.prompts(config.split, n=config.n_prompts)]
    batches = []
    for start in range(0, len(texts), config.batch_size):
        encoded = model.tokenizer(texts[start:start + config.batch_size], return_tensors="pt", padding=True,
                                  truncation=True, max_length=config.max_length, padding_side="right")
        batches.append((encoded["input_ids"], encoded["attention_mask"]))
    return batches


def mlp_write(weights: MLPWriteWeights, post: Float[Tensor, "*rows d_mlp"]) -> Float[Tensor, "*rows d_model"]:
    """What a layer's MLP adds to the residual stream from ``post`` (its down projection, then its post-norm)."""
    raw = post.float() @ weights.w_out + (0 if weights.bias is None else weights.bias)
    if weights.gain is None:
        return raw
    return raw * torch.rsqrt(raw.pow(2).mean(-1, keepdim=True) + weights.eps) * weights.gain


def mlp_write_changes(model: Model, interventions: Sequence[Steer],
                      batches: Iterable[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]]
                      ) -> dict[int, Float[Tensor, " d_model"]]:
    """Layer -> the mean over real tokens of the change ``interventions`` (edits of ``mlp.hook_post``) make to that
    layer's MLP output, each edit's change measured at its own site with every edit applied."""
    sums: dict[int, Tensor] = {}
    writers: dict[int, MLPWriteWeights] = {}
    count = 0
    for tokens, mask in batches:
        real = mask.to(device_of(model)).bool().unsqueeze(-1)
        hooks = []
        for name, function in hooks_for(model, interventions):
            site = Site.parse(name)
            if site.kind == "mlp_post":
                writer = writers.setdefault(site.layer, mlp_write_weights(model, site.layer))
                function = _recording_write_change(function, writer, site.layer, real, sums)
            elif site.kind != "mlp_pre_linear":
                raise ExportError(f"{name} is not an MLP neuron edit; lape-vector converts only mlp.hook_post edits")
            hooks.append((name, function))
        with torch.inference_mode():
            forward_to(model, tokens, mask, hooks)
        count += int(mask.sum())
    return {layer: total / count for layer, total in sums.items()}


def _recording_write_change(function: Any, weights: MLPWriteWeights, layer: int, real: Tensor,
                            sums: dict[int, Tensor]) -> Any:
    """``function`` as a hook that also adds its edit's change of the MLP output, summed over ``real`` tokens, to
    ``sums[layer]``."""
    def recorded(activation: Tensor, hook: Any) -> Tensor:
        edited = function(activation, hook)
        change = ((mlp_write(weights, edited) - mlp_write(weights, activation)) * real.to(edited.device)).sum((0, 1))
        sums[layer] = sums[layer] + change.cpu() if layer in sums else change.cpu()
        return edited
    return recorded


def write_vectors(vectors: ExportedVectors, path: str | Path, *, model_hint: str | None = None) -> Path:
    """Write ``vectors`` in the format named by ``path``'s suffix (``.gguf`` or ``.safetensors``)."""
    path = Path(path)
    file_format = check_format(path.suffix.lstrip("."), path)
    return write_gguf(vectors, path, model_hint=model_hint) if file_format == "gguf" else \
        write_safetensors(vectors, path)


def check_format(file_format: str, path: str | Path) -> str:
    """``file_format`` when it is one of :data:`FORMATS` and ``path`` ends in ``.<file_format>``."""
    if file_format not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {file_format!r}")
    if Path(path).suffix != f".{file_format}":
        raise ExportError(f"{path} does not end in .{file_format}: name the {file_format} file FILE.{file_format}")
    return file_format


def write_gguf(vectors: ExportedVectors, path: str | Path, *, model_hint: str | None = None) -> Path:
    """A llama.cpp control vector: ``general.architecture = controlvector``, ``controlvector.model_hint`` (default:
    the model's name), ``controlvector.layer_count`` (tensors written) and one float32 ``direction.<L>`` per layer
    ``L`` (added after block ``L``); layer 0 cannot be expressed (an :class:`ExportError`). Written atomically."""
    from gguf import GGUFWriter

    if 0 in vectors.layers:
        raise ExportError(f"a llama.cpp control vector cannot steer layer 0 (direction.<n> is added after block n and "
                          f"direction.0 is rejected), but these vectors are at layers {list(vectors.layers)}; export "
                          "one layer of 1 and above (--layer L) or --format safetensors")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    writer = GGUFWriter(temporary, "controlvector")
    writer.add_string("controlvector.model_hint", model_hint or vectors.model)
    writer.add_uint32("controlvector.layer_count", len(vectors.layers))
    for key, value in vectors.metadata().items():
        writer.add_string(f"workbench.{key}", value)
    for layer, vector in zip(vectors.layers, vectors.vectors, strict=True):
        writer.add_tensor(f"direction.{layer}", vector.numpy().astype(np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class ControlVectorFile:
    """A llama.cpp control vector as read back: ``direction.<n>`` is added at ``blocks.{n}.hook_resid_post``."""

    model_hint: str
    """``controlvector.model_hint``."""
    layer_count: int
    """``controlvector.layer_count``."""
    directions: dict[int, Float[Tensor, " d_model"]]
    """n -> the float32 tensor ``direction.<n>``."""
    metadata: dict[str, str]
    """The ``workbench.*`` keys (without the prefix); empty for a file written elsewhere."""

    def hook_name(self, n: int) -> str:
        """Where llama.cpp adds ``direction.<n>``, as a TransformerLens hook name."""
        return Site(n, SITE_KIND).hook_name


def read_gguf(path: str | Path) -> ControlVectorFile:
    """A llama.cpp control vector file (checked the way llama.cpp's loader checks it)."""
    from gguf import GGMLQuantizationType, GGUFReader

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path} does not exist")
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as error:
        raise ExportError(f"{path} is not a GGUF file ({error})") from None
    fields = {name: reader.fields[name].contents() for name in reader.fields}
    if fields.get("general.architecture") != "controlvector":
        raise ExportError(f"{path} is not a control vector (general.architecture is "
                          f"{fields.get('general.architecture')!r}, not 'controlvector')")
    directions = {}
    for tensor in reader.tensors:
        match = re.fullmatch(r"direction\.(\d+)", tensor.name)
        if not match or int(match.group(1)) == 0 or tensor.tensor_type != GGMLQuantizationType.F32 \
                or len(tensor.shape) != 1:
            raise ExportError(f"{path}: tensor {tensor.name!r} is not a 1-d float32 direction.<n> with n >= 1")
        directions[int(match.group(1))] = torch.from_numpy(np.array(tensor.data, dtype=np.float32))
    return ControlVectorFile(str(fields.get("controlvector.model_hint", "")),
                             int(fields.get("controlvector.layer_count", len(directions))), directions,
                             {key.removeprefix("workbench."): str(value) for key, value in fields.items()
                              if key.startswith("workbench.")})


def write_safetensors(vectors: ExportedVectors, path: str | Path) -> Path:
    """One float32 tensor per hook name (``blocks.{L}.hook_resid_post``) with :meth:`ExportedVectors.metadata`."""
    return save_tensors(dict(zip(vectors.hook_names, vectors.vectors, strict=True)), path, vectors.metadata())


def read_safetensors(path: str | Path) -> ExportedVectors:
    """The :class:`ExportedVectors` that :func:`write_safetensors` wrote."""
    from safetensors import safe_open

    tensors = load_tensors(path)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    missing = [key for key in ("model", "method", "target", "source", "layers", "strength") if key not in metadata]
    if missing:
        raise ExportError(f"{path} is not a workbench steering export (metadata lacks {', '.join(missing)})")
    layers = tuple(json.loads(metadata["layers"]))
    return ExportedVectors(metadata["model"], metadata["method"], metadata["target"], metadata["source"], layers,
                           torch.stack([tensors[Site(layer, SITE_KIND).hook_name] for layer in layers]),
                           float(metadata["strength"]), json.loads(metadata.get("calibrated", "false")),
                           metadata.get("description", ""), json.loads(metadata.get("data", "{}")))
