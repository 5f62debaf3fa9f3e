"""Moving store entries between machines: export committed entries to one ``.tar.xz``, import them elsewhere.

A benchmark computed on a GPU node, or over several sessions on machines whose caches do not survive, is carried
as the entries it finished (``runs``, ``calibrations`` ...). An import verifies every entry exactly as a read does
(kind, format version, every file's size and sha256 against its ``entry.json``) before it becomes visible; entries
of another format version, damaged ones and archive members outside ``<kind>/<scope>/<entry>/`` are refused and
reported, and an entry already in the store is kept as it is.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workbench.store import ENTRY_FILE, KINDS, Entry, Store, StoreError, kind


@dataclass
class ImportReport:
    """What an import did, entry by entry (paths relative to the store root)."""

    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    """Already in the store (kept unchanged)."""
    refused: dict[str, str] = field(default_factory=dict)
    """Entry -> why it was not imported."""


def export_entries(archive: str | Path, kinds: Sequence[str], *, store: Store | None = None) -> list[str]:
    """Write every committed, verified entry of ``kinds`` to ``archive`` (``.tar.xz``); returns the entries."""
    store = store or Store()
    for name in kinds:
        kind(name)  # unknown kinds fail before anything is written
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    exported = []
    partial = archive.with_name(f".{archive.name}.partial")
    with tarfile.open(partial, "w:xz") as tar:
        for name in kinds:
            for info in store.entries(name):
                relative = info.path.relative_to(store.root).as_posix()
                if not info.ready or _problem(info.path, name) is not None:
                    continue
                tar.add(info.path, arcname=relative, filter=_normalised)
                exported.append(relative)
    partial.replace(archive)
    return exported


def import_entries(archive: str | Path, *, store: Store | None = None) -> ImportReport:
    """Add the entries of an :func:`export_entries` archive to the store, each verified first."""
    store = store or Store()
    archive = Path(archive)
    if not archive.is_file():
        raise StoreError(f"no store archive at {archive}: give a .tar.xz written by `workbench cache export`")
    report = ImportReport()
    store.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".import-") as staging:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:
            raise StoreError(f"{archive} is not a readable store archive ({err})") from err
        for directory in sorted(Path(staging).glob("*/*/*")):
            relative = directory.relative_to(staging).as_posix()
            problem = _problem(directory, directory.parts[-3]) if directory.is_dir() else "not a directory"
            if problem is not None:
                report.refused[relative] = problem
            elif (store.root / relative).exists() and _problem(store.root / relative, directory.parts[-3]) is None:
                report.present.append(relative)
            else:
                destination = store.root / relative
                shutil.rmtree(destination, ignore_errors=True)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(directory), destination)
                report.added.append(relative)
        for stray in Path(staging).glob("*"):
            if stray.name not in KINDS:
                report.refused[stray.name] = f"not a store kind (known: {', '.join(KINDS)})"
    return report


def _problem(directory: Path, kind_name: str) -> str | None:
    """Why the entry at ``directory`` cannot be used (None: it verifies)."""
    if kind_name not in KINDS:
        return f"unknown kind {kind_name!r}"
    record_path = directory / ENTRY_FILE
    try:
        key = json.loads(record_path.read_text(encoding="utf-8"))["key"]
    except (OSError, json.JSONDecodeError, KeyError, UnicodeDecodeError) as err:
        return f"unreadable {ENTRY_FILE} ({err})"
    return Entry(KINDS[kind_name], key, directory).problem()


def _normalised(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Archive members without the exporting user's ids, so archives differ only by content."""
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member
