"""Offline and safe: commands work with the network cut once the caches exist; nothing unpickles or runs remote
code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"


def _network_cut_available() -> str | None:
    """None when ``unshare -n`` works here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare on this platform"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -n is not permitted here: {probe.stderr.strip()}"


def _workbench_offline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "-n", sys.executable, "-m", "workbench.cli", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.model
def test_commands_run_with_the_network_cut(gemma_fast):
    """``gemma_fast`` builds the embedded checkpoint first (the cache a user has after the first run)."""
    reason = _network_cut_available()
    if reason is not None:
        pytest.skip(reason)
    info = _workbench_offline("info", "--json")
    assert info.returncode == 0, info.stderr[-2000:]
    assert '"n_layers": 18' in info.stdout
    steer = _workbench_offline("steer", "--method", "prompt-native", "--target", "es", "--prompt",
                               "What is a spreadsheet?", "--max-new-tokens", "6")
    assert steer.returncode == 0, steer.stderr[-2000:]
    assert "spreadsheet" in steer.stdout


def _calls(pattern: str) -> list[str]:
    hits = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, line):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    return hits


def test_nothing_unpickles_or_trusts_remote_code():
    unsafe_loads = [hit for hit in _calls(r"torch\.load\(") if "weights_only=True" not in hit]
    assert not unsafe_loads, unsafe_loads
    assert not _calls(r"^\s*import pickle|^\s*from pickle|pickle\.loads?\("), "the workbench must not unpickle"
    assert not _calls(r"trust_remote_code\s*=\s*True"), "remote code runs only when a user asks for it"
