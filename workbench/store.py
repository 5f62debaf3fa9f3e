"""One store for every cached artifact: content-addressed by (kind, format version, key), verified on every read.

An entry is a directory ``<root>/<kind>/<scope>/<label>-<digest>/`` where ``digest`` hashes the kind's name, its
format version and the entry's key (everything the artifact depends on: model, data, method configuration). A
builder writes its files into :attr:`Entry.path` (each write atomic) and then calls :meth:`Entry.commit`, which
records every file's size and sha256 in ``entry.json``. A reader asks :meth:`Entry.ready` first: only a committed
entry whose files still match their record is read, so an interrupted build (no ``entry.json``) or a truncated or
edited file is never used: the entry is cleared and rebuilt. Work an interrupted build left in an uncommitted entry
stays there for the builder to resume from.

Changing a kind's format (what is stored, or how it is computed) means bumping its version below: every old entry
of that kind is then unreachable. The model checkpoint (``models/``, verified by its own manifest) and the plotly.js
bundle (``plotlyjs/``) also live under the root but are not store kinds. The root is ``$WORKBENCH_CACHE`` (default
``~/.cache/workbench``), or, for a block of code, the directory given to :func:`using_cache`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.artifacts import atomic_write_json
from workbench.errors import WorkbenchError

CACHE_ENV_VAR = "WORKBENCH_CACHE"
ENTRY_FILE = "entry.json"


class StoreError(WorkbenchError):
    """An unknown kind of cached artifact was asked for."""


@dataclass(frozen=True)
class Kind:
    """One kind of cached artifact."""

    name: str
    """Directory name under the root, e.g. ``directions``."""
    version: int
    """Format version: part of every key, so a bump makes all older entries of this kind unreachable."""
    description: str
    """What an entry holds (shown by ``workbench cache ls``)."""


def _kinds(*kinds: Kind) -> dict[str, Kind]:
    return {kind.name: kind for kind in kinds}


# Every kind the workbench caches. Bump a kind's version whenever what it stores, or how it is computed, changes.
# directions 2: natural scale = projection of the means' difference; spectra 2: mean differences stored per layer;
# calibrations 2: named strategy, bounds and leakage in each sweep row; 3: coherence in each sweep row;
# runs 2: encoder relevance, coherence, LID with close relatives on answers, score over relevance x coherence;
# runs 3 / calibrations 4: KL and NLL on prompt-conditioned question/answer contexts; calibrations 5: layer ties
# broken by LID, then dM; 6: with no setting within the bounds, the least damaging one (not the weakest).
DIRECTIONS = Kind("directions", 2, "direction sets (DiffMean, PCA, LDA, probe) at every layer, per target/source")
CALIBRATIONS = Kind("calibrations", 6, "a tunable method's chosen layer and strength on dev, with its grid")
RUNS = Kind("runs", 3, "one evaluated treatment (metrics + per-prompt records) on one prompt set")
NEURON_HARVESTS = Kind("neuron-harvests", 1, "per-language mlp_pre statistics with histograms, every layer")
NEURON_POOLED = Kind("neuron-pooled", 1, "sentence-pooled act(gate) on parallel items, per language")
NEURON_GATES = Kind("neuron-gates", 1, "act(gate) mean / p90 / p10 per neuron and language")
NEURON_MASKS = Kind("neuron-masks", 1, "a neuron method's language masks")
SPECTRA = Kind("spectra", 2, "FOXP2 stage II: per-layer spectra, null models, window")
SAES = Kind("saes", 1, "one trained SAE at one site (SAELens format, with its training record)")
FEATURES = Kind("features", 1, "FOXP2 stage I feature analysis at a window")
SAE_STEERING = Kind("sae-steering", 1, "an SAE method's latent shift or feature vector for one target at one layer")
TOKEN_SETS = Kind("token-sets", 1, "per-language vocabulary masks for a tokenizer")
RELEVANCE_CALIBRATIONS = Kind("relevance-calibrations", 1,
                              "an encoder's floor and ceiling of cosines for one language (relevance scores)")
UNIT_STATISTICS = Kind("unit-statistics", 1, "every unit of one site (SAE latents, MLP neurons) over held-out text: "
                       "firing counts, value reservoirs, top texts (what cards read)")
HELD_OUT_CE = Kind("held-out-ce", 1, "held-out cross-entropy per language without any edit (cards' ablations)")
MATCHED_STRENGTHS = Kind("matched-strengths", 1, "FOXP2 controls' strengths matched to FOXP2's edit norm or dev KL")
PAIR_ROWS = Kind("pair-rows", 1, "FOXP2 stage II's aligned English/target rows at every layer (read again by stage I)")
KINDS: dict[str, Kind] = _kinds(DIRECTIONS, CALIBRATIONS, RUNS, NEURON_HARVESTS, NEURON_POOLED, NEURON_GATES,
                                NEURON_MASKS, SPECTRA, SAES, FEATURES, SAE_STEERING, TOKEN_SETS,
                                RELEVANCE_CALIBRATIONS, UNIT_STATISTICS, HELD_OUT_CE, MATCHED_STRENGTHS, PAIR_ROWS)
"""Every kind of cached artifact, by name."""


def kind(name: str) -> Kind:
    """The kind called ``name``; an unknown name lists the known ones."""
    if name not in KINDS:
        raise StoreError(f"unknown cache kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


_override: contextvars.ContextVar[Path | None] = contextvars.ContextVar("workbench_cache_override", default=None)


def cache_dir() -> Path:
    """Root of the workbench cache: the :func:`using_cache` directory, else ``$WORKBENCH_CACHE``, else
    ``~/.cache/workbench``."""
    override = _override.get()
    if override is not None:
        return override
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "workbench").expanduser()


@contextlib.contextmanager
def using_cache(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Every cached artifact read or written inside the block lives under ``root``."""
    token = _override.set(Path(root).expanduser())
    try:
        yield Path(root)
    finally:
        _override.reset(token)


def digest(payload: Any, length: int = 16) -> str:
    """Hex sha256 of ``payload`` as canonical JSON (sorted keys; non-JSON values by ``str``)."""
    text = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 23):
            hasher.update(block)
    return hasher.hexdigest()


def files_problem(directory: Path, files: Mapping[str, Mapping[str, Any]]) -> str | None:
    """None when every file recorded in ``files`` (name -> size, sha256) is in ``directory`` unchanged, else what is
    wrong with the first that is not."""
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"missing file {name}"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['size']}"
        if sha256_file(path) != expected["sha256"]:
            return f"{name} does not match its recorded sha256"
    return None


def _files(directory: Path) -> list[Path]:
    """The files of an entry, without its record and without temporary files of interrupted atomic writes."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != ENTRY_FILE
                  and not p.name.startswith("."))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)[:80]


@dataclass(frozen=True)
class Entry:
    """One cached artifact: a directory, its kind and key."""

    kind: Kind
    key: Mapping[str, Any]
    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def problem(self) -> str | None:
        """None when the entry is committed and every recorded file matches its size and sha256, else why not."""
        record_path = self.path / ENTRY_FILE
        if not record_path.is_file():
            return "not built (no entry.json)"
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            files = record["files"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as err:
            return f"unreadable entry.json ({err})"
        if record.get("kind") != self.kind.name or record.get("version") != self.kind.version:
            return f"entry.json is for {record.get('kind')} v{record.get('version')}"
        return files_problem(self.path, files)

    def ready(self) -> bool:
        """Whether the entry can be read. A committed entry that fails verification is reported and cleared."""
        problem = self.problem()
        if problem is None:
            return True
        if (self.path / ENTRY_FILE).exists():
            print(f"[workbench] cached {self.kind.name} at {self.path} is unusable: {problem}; rebuilding", flush=True)
            self.clear()
        return False

    def commit(self, **info: Any) -> Entry:
        """Record every file the builder wrote (size, sha256); from now on the entry is read, not rebuilt."""
        files = {str(p.relative_to(self.path)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in _files(self.path)}
        atomic_write_json(self.path / ENTRY_FILE, {"kind": self.kind.name, "version": self.kind.version,
                                                   "key": self.key, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                   "files": files, **info})
        return self

    def clear(self) -> None:
        """Remove the entry (committed or not)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def prepare(self) -> Path:
        """The entry's directory, created, for a builder to write into."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path


@dataclass(frozen=True)
class EntryInfo:
    """One row of ``workbench cache ls``."""

    kind: str
    path: Path
    bytes: int
    ready: bool
    """Committed (an ``entry.json`` exists; its files are verified only when the entry is read)."""
    created: str


class Store:
    """The cache: ``Store()`` is rooted at :func:`cache_dir` (read when each entry is made)."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self._root = Path(root).expanduser() if root is not None else None

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else cache_dir()

    def entry(self, kind: Kind, key: Mapping[str, Any], *, scope: str = "all", label: str = "") -> Entry:
        """The entry of ``kind`` for ``key``, under ``scope`` (e.g. the model's key) with a readable ``label``."""
        name = digest({"kind": kind.name, "version": kind.version, "key": key})
        folder = f"{_slug(label)}-{name}" if label else name
        return Entry(kind, dict(key), self.root / kind.name / _slug(scope) / folder)

    def entries(self, kind_name: str | None = None) -> list[EntryInfo]:
        """Every entry under the root (of one kind), committed or not."""
        names = [kind(kind_name).name] if kind_name is not None else list(KINDS)
        return [self._info(name, directory) for name in names
                for directory in sorted(self.root.glob(f"{name}/*/*")) if directory.is_dir()]

    @staticmethod
    def _info(kind_name: str, directory: Path) -> EntryInfo:
        size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        created = ""
        record = directory / ENTRY_FILE
        if record.is_file():
            with contextlib.suppress(json.JSONDecodeError, OSError, UnicodeDecodeError):
                created = json.loads(record.read_text(encoding="utf-8")).get("created", "")
        return EntryInfo(kind_name, directory, size, record.is_file(), created)

    def clear(self, kind_name: str | None = None) -> int:
        """Delete every entry (of one kind; the model checkpoint is kept); returns the bytes freed."""
        freed = 0
        for info in self.entries(kind_name):
            freed += info.bytes
            shutil.rmtree(info.path, ignore_errors=True)
        return freed
