"""An interrupted long run resumes from its last completed unit and ends with the metrics an uninterrupted run
gives: here the neuron study, killed by SIGTERM once its first language's harvest is stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

COMMAND = ["-m", "workbench.cli", "neurons", "ap90", "--langs", "en,es", "--tokens", "1500"]


def _cache_with_the_model(root: Path) -> dict[str, str]:
    """A fresh cache that shares the built model checkpoint (the user's cache after the first run)."""
    from workbench.embedded import ensure_embedded_checkpoint

    root.mkdir()
    (root / "models").symlink_to(ensure_embedded_checkpoint().parent)
    return {**os.environ, "WORKBENCH_CACHE": str(root)}


def _run(env: dict[str, str], out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *COMMAND, "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)


def _harvested(root: Path, lang: str) -> list[Path]:
    return sorted(root.glob(f"neuron-harvests/*/{lang}-*/entry.json"))


@pytest.mark.model
def test_a_killed_neuron_study_resumes_and_gives_the_uninterrupted_result(tmp_path):
    whole = _run(_cache_with_the_model(tmp_path / "cache-whole"), tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]

    cache = tmp_path / "cache-killed"
    env = _cache_with_the_model(cache)
    process = subprocess.Popen([sys.executable, *COMMAND, "--out", str(tmp_path / "killed")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not _harvested(cache, "en") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert not (tmp_path / "killed" / "summary.json").exists()
    (english,) = _harvested(cache, "en")
    stored = english.stat().st_mtime_ns

    resumed = _run(env, tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert english.stat().st_mtime_ns == stored  # the finished language was reused, not harvested again
    for name in ("mask.safetensors",):
        before, after = (load_file(str(tmp_path / run / "mask" / name)) for run in ("whole", "killed"))
        assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("whole", "killed")]
    for key in ("n_selected", "per_language", "per_layer_language", "jaccard_languages"):
        assert summaries[0][key] == summaries[1][key], key
