"""Atomic artifact writes: safetensors for tensors, json for configs and metrics, text for tables and figures.

Every write goes to a temporary file in the target directory and is renamed into place, so an interrupted run
never leaves a half-written artifact that a later run would mistake for a finished one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


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


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    with _atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    """Write json (indented, UTF-8 kept readable) atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
