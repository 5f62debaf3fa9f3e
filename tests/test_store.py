"""The store: content addressing by (kind, version, key), verified reads, the per-kind keys, `workbench cache`."""

import dataclasses
import json
import re
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench import store
from workbench.calibration import CalibrationConfig, calibration_entry
from workbench.cli import app
from workbench.directions import DirectionDataConfig, directions_entry
from workbench.methods import get_method
from workbench.store import KINDS, Store, StoreError, using_cache
from workbench.store_archive import export_entries, import_entries
from workbench.store_cli import _size


def _build(entry: store.Entry, payload: str = "payload") -> store.Entry:
    (entry.prepare() / "data.json").write_text(json.dumps({"value": payload}))
    (entry / "sub").mkdir(exist_ok=True)
    (entry / "sub" / "tensor.bin").write_bytes(bytes(range(256)) * 16)
    return entry.commit()


@pytest.mark.parametrize("kind", list(KINDS.values()), ids=list(KINDS))
def test_every_kind_reads_only_its_own_key_and_version(kind, tmp_path):
    cache = Store(tmp_path)
    entry = _build(cache.entry(kind, {"config": {"width": 4}}, scope="model-a", label="hi-en"))
    assert cache.entry(kind, {"config": {"width": 4}}, scope="model-a", label="hi-en").ready()
    changed = cache.entry(kind, {"config": {"width": 8}}, scope="model-a", label="hi-en")
    bumped = Store(tmp_path).entry(dataclasses.replace(kind, version=kind.version + 1), {"config": {"width": 4}},
                                   scope="model-a", label="hi-en")
    assert changed.path != entry.path and not changed.ready()
    assert bumped.path != entry.path and not bumped.ready()
    assert [info.path for info in cache.entries(kind.name)] == [entry.path]


def test_the_architecture_doc_lists_every_kind_at_its_version():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    listed = {name: int(version) for name, version in re.findall(r"^\| `([a-z-]+)` \| (\d+) \|", doc, re.M)}
    assert listed == {name: kind.version for name, kind in KINDS.items()}


def test_an_uncommitted_entry_is_not_read_and_keeps_its_partial_work(tmp_path):
    entry = Store(tmp_path).entry(store.RUNS, {"run": 1})
    (entry.prepare() / "half.json").write_text("{")
    assert not entry.ready()
    assert (entry / "half.json").exists()          # left for the builder to resume from
    assert [info.ready for info in Store(tmp_path).entries("runs")] == [False]


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete", "record"])
def test_a_damaged_entry_is_detected_cleared_and_rebuilt(damage, tmp_path, capsys):
    entry = _build(Store(tmp_path).entry(store.DIRECTIONS, {"target": "hi"}))
    data = entry / "sub" / "tensor.bin"
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:-100])
    elif damage == "edit":                      # still valid JSON, but not what was committed
        (entry / "data.json").write_text(json.dumps({"value": "edited by hand"}))
    elif damage == "delete":
        data.unlink()
    else:
        (entry / store.ENTRY_FILE).write_text("{not json")
    assert not entry.ready()
    assert "unusable" in capsys.readouterr().out
    assert not entry.path.exists()
    assert _build(entry).ready()


def test_root_is_the_environment_or_the_block_override(tmp_path, monkeypatch):
    monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path / "env"))
    assert Store().root == tmp_path / "env"
    with using_cache(tmp_path / "block"):
        assert Store().root == tmp_path / "block" == store.cache_dir()
    assert Store().entry(store.SAES, {}).path.is_relative_to(tmp_path / "env")


def test_unknown_kind_names_the_known_ones(tmp_path):
    with pytest.raises(StoreError, match="known: directions, calibrations"):
        Store(tmp_path).entries("direction")


def test_direction_and_calibration_keys_follow_their_configs(tiny_model):
    base = directions_entry(tiny_model, "hi", "en", DirectionDataConfig())
    assert base.path == directions_entry(tiny_model, "hi", "en", DirectionDataConfig()).path
    assert base.path != directions_entry(tiny_model, "hi", "en", DirectionDataConfig(n_rows=100)).path
    assert base.path != directions_entry(tiny_model, "es", "en", DirectionDataConfig()).path
    method = get_method("diffmean")
    rule = method.default_rule
    calibration = calibration_entry(tiny_model, method, "hi", "en", rule, CalibrationConfig(layers=(0,)))
    assert calibration.path != calibration_entry(tiny_model, method, "hi", "en", rule,
                                                 CalibrationConfig(layers=(1,))).path
    other_data = dataclasses.replace(method, data=DirectionDataConfig(n_rows=50))   # a changed method fingerprint
    assert calibration.path != calibration_entry(tiny_model, other_data, "hi", "en", rule,
                                                 CalibrationConfig(layers=(0,))).path


def test_cache_cli_lists_sizes_and_clears_by_kind(tmp_path, monkeypatch):
    monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path))
    _build(Store().entry(store.SPECTRA, {"target": "hi"}, label="hi-en"))
    _build(Store().entry(store.RUNS, {"run": 1}, label="eval-none-hi"))
    runner = CliRunner()
    listed = runner.invoke(app, ["cache", "ls"])
    assert listed.exit_code == 0 and "eval-none-hi" in listed.output and "spectra" in listed.output
    usage = runner.invoke(app, ["cache", "du", "--kind", "runs"])
    run_bytes = Store().entries("runs")[0].bytes
    assert run_bytes > 4096 and usage.exit_code == 0 and f"total {_size(run_bytes)}" in usage.output
    cleared = runner.invoke(app, ["cache", "clear", "--kind", "runs", "--yes"])
    assert cleared.exit_code == 0 and "freed" in cleared.output
    assert [info.kind for info in Store().entries()] == ["spectra"]


def test_an_exported_archive_imports_verified_entries_and_refuses_damaged_or_stale_ones(tmp_path):
    source = Store(tmp_path / "gpu-node")
    runs = [_build(source.entry(store.RUNS, {"run": i}, scope="gemma", label=f"run{i}")) for i in range(3)]
    calibration = _build(source.entry(store.CALIBRATIONS, {"method": "diffmean"}, scope="gemma"))
    _build(source.entry(store.DIRECTIONS, {"target": "hi"}, scope="gemma"))        # a kind not exported
    (source.entry(store.RUNS, {"run": "interrupted"}, scope="gemma").prepare() / "half.json").write_text("{")
    archive = tmp_path / "bench.tar.xz"
    exported = export_entries(archive, ["runs", "calibrations"], store=source)
    assert len(exported) == 4 and not any("directions" in name or "interrupted" in name for name in exported)

    laptop = Store(tmp_path / "laptop")
    report = import_entries(archive, store=laptop)
    assert len(report.added) == 4 and not report.refused
    for entry in (*runs, calibration):
        moved = store.Entry(entry.kind, entry.key, laptop.root / entry.path.relative_to(source.root))
        assert moved.ready() and (moved / "data.json").read_text() == (entry / "data.json").read_text()
    assert len(import_entries(archive, store=laptop).present) == 4           # a second import changes nothing

    (runs[0] / "data.json").write_text(json.dumps({"value": "edited after commit"}))
    stale = source.entry(store.RUNS, {"run": 1}, scope="gemma", label="run1")
    record = json.loads((stale / store.ENTRY_FILE).read_text())
    (stale / store.ENTRY_FILE).write_text(json.dumps({**record, "version": store.RUNS.version - 1}))
    with tarfile.open(archive, "w:xz") as tar:
        for entry in runs:
            tar.add(entry.path, arcname=entry.path.relative_to(source.root).as_posix())
    fresh = import_entries(archive, store=Store(tmp_path / "fresh"))
    assert len(fresh.added) == 1 and set(fresh.refused) == {
        runs[0].path.relative_to(source.root).as_posix(), runs[1].path.relative_to(source.root).as_posix()}
    assert "data.json has" in fresh.refused[runs[0].path.relative_to(source.root).as_posix()]
    with pytest.raises(StoreError, match="not a readable store archive"):
        import_entries(tmp_path / "gpu-node" / "runs" / "gemma" / runs[2].path.name / "data.json",
                       store=Store(tmp_path / "fresh"))


def test_cache_export_and_import_commands(tmp_path, monkeypatch):
    monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path / "a"))
    _build(Store().entry(store.RUNS, {"run": 1}, scope="gemma"))
    runner = CliRunner()
    exported = runner.invoke(app, ["cache", "export", "--out", str(tmp_path / "x.tar.xz"), "--kind", "runs"])
    assert exported.exit_code == 0 and "exported 1 entries" in exported.output
    monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path / "b"))
    imported = runner.invoke(app, ["cache", "import", str(tmp_path / "x.tar.xz")])
    assert imported.exit_code == 0 and "imported 1 entries" in imported.output
    assert len(Store().entries("runs")) == 1
    bad = runner.invoke(app, ["cache", "export", "--out", str(tmp_path / "y.tar.xz"), "--kind", "nope"])
    assert bad.exit_code == 2 and "unknown kind 'nope'" in bad.output
