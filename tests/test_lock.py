"""The environment the tests run in is the committed lock, and the lock honours pyproject.toml's ranges."""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def _locked() -> dict[str, Version]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", LOCK.read_text(), flags=re.MULTILINE)
    return {canonicalize_name(name): Version(pinned) for name, pinned in pins}


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_every_locked_package_is_hashed():
    entries = re.findall(r"^([A-Za-z0-9._-]+)==\S+((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", LOCK.read_text(),
                         flags=re.MULTILINE)
    assert len(entries) == len(_locked()) > 100
    unhashed = [name for name, hashes in entries if not hashes]
    assert not unhashed, f"packages without a hash in {LOCK.name}: {unhashed}"


def test_lock_satisfies_every_range_in_pyproject():
    locked = _locked()
    for requirement in _project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is a dependency but not in {LOCK.name}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{LOCK.name} pins {name} {locked[name]}, outside pyproject.toml's {requirement.specifier}: run make lock")


def test_lock_pins_the_cpu_torch_and_a_transformers_the_bridge_works_with():
    locked = _locked()
    assert locked["torch"].local == "cpu", locked["torch"]
    assert locked["transformers"] < Version("5.24"), "transformers 5.24 breaks the TransformerLens bridge's cache"


def test_installed_packages_are_the_locked_ones():
    """`make setup` installs the lock; a hand-installed or drifted package would make the suite test another set."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("not running in the environment `make setup` builds from the lock (e.g. make test-latest)")
    drifted = {}
    for name, pinned in _locked().items():
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            drifted[name] = "not installed"
            continue
        if installed != pinned:
            drifted[name] = f"{installed} installed, {pinned} locked"
    assert not drifted, drifted
