"""Atomic artifact writes: safetensors for tensors, json for configs and metrics, text for tables and figures.

Every write goes to a temporary file in the target directory and is renamed into place, so an interrupted run
never leaves a half-written artifact that a later run would mistake for a finished one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from workbench.errors import WorkbenchError


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a flat name -> tensor dict as safetensors (contiguous CPU copies), atomically."""
    path = Path(path)
    with _atomic_path(path) as temporary:
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(temporary),
                  metadata=metadata)
    return path


class ArtifactError(WorkbenchError):
    """A saved artifact that is missing, truncated or not in its format (the message names the file)."""


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file; a missing, truncated or foreign file is an :class:`ArtifactError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (an artifact folder with a missing tensor file)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"{path} cannot be read ({error}): truncated or not a safetensors file; rebuild "
                            "the artifact") from None


def read_json(path: str | Path) -> Any:
    """A JSON file; a missing or malformed one is an :class:`ArtifactError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (an artifact folder with a missing record)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is not valid JSON ({error}): truncated or edited; rebuild the artifact") \
            from None


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    with _atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists and tuples) replaced by None, which JSON has."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def json_text(payload: Any, *, indent: int | None = 2) -> str:
    """Valid JSON (no ``NaN`` / ``Infinity`` literals: non-finite floats become null), UTF-8 kept readable."""
    return json.dumps(json_ready(payload), indent=indent, ensure_ascii=False, default=str, allow_nan=False)


def nan_for_null(row: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``row`` with null values of the numeric ``keys`` read back as NaN (a pair of nulls as a pair of NaNs)."""
    revived = dict(row)
    for key in keys:
        value = revived.get(key)
        if value is None and key in revived:
            revived[key] = math.nan
        elif isinstance(value, list) and any(item is None for item in value):
            revived[key] = [math.nan if item is None else item for item in value]
    return revived


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    """Write JSON (indented, UTF-8 kept readable; NaN and inf as null) atomically."""
    return atomic_write_text(path, json_text(payload) + "\n")
