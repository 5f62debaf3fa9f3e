"""Data-parallel harvesting: sharding, the exact all-reduce of the statistics (two gloo processes on CPU against one
process), the neuron and direction pipelines reading a saved harvest, and bad input refused before any model."""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

import workbench.distributed
from workbench.activations import ActivationStats, HarvestConfig, HarvestError, _UnitAccumulator
from workbench.distributed import Launch, harvest_corpus, merge_moments, merge_reservoirs, shard, torchrun_launch

LANGS = ("en", "hi", "es")
SITES = ("mlp_pre", "resid_post", "0.mlp_post")
CONFIG = HarvestConfig(histogram_kinds=("mlp_pre",), histogram_bins=64, histogram_max_abs=100.0, sample_tokens=24)
MIXED = {"languages": LANGS, "sites": SITES, "config": CONFIG, "n_tokens": 300, "max_length": 48, "batch_size": 8}
"""Several batches per language: some languages on both ranks, one on a single rank."""
ONE_BATCH = {"languages": ("hi",), "sites": ("mlp_pre",), "config": HarvestConfig(sample_tokens=24), "n_tokens": 20,
             "max_length": 48, "batch_size": 4}
"""A single batch (and no histograms): rank 1 harvests nothing at all."""


# ------------------------------------------------------------------------------------------------ pure parts
@pytest.mark.parametrize("n, world_size", [(0, 2), (1, 3), (7, 2), (10, 4), (5, 5)])
def test_shards_are_disjoint_and_cover_the_items(n, world_size):
    items = list(range(n))
    shards = [shard(items, rank, world_size) for rank in range(world_size)]
    assert sorted(item for part in shards for item in part) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [shard(items, rank, world_size) for rank in range(world_size)]  # deterministic
    with pytest.raises(HarvestError, match="0 <= rank < world_size"):
        shard(items, world_size, world_size)


def test_the_torchrun_environment_is_read_and_checked():
    assert torchrun_launch({}) == Launch(0, 1, 0)
    assert torchrun_launch({"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"}) == Launch(5, 8, 1)
    with pytest.raises(HarvestError, match="incomplete torchrun environment"):
        torchrun_launch({"WORLD_SIZE": "2"})
    with pytest.raises(HarvestError, match="need 0 <= RANK < WORLD_SIZE"):
        torchrun_launch({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})


def test_merged_moments_equal_the_moments_of_the_union_and_ignore_empty_parts():
    torch.manual_seed(0)
    parts = [torch.randn(n, 5, dtype=torch.float64) * 3 + 1 for n in (7, 0, 1, 40)]
    merged = merge_moments([(len(p), p.mean(0) if len(p) else torch.zeros(5, dtype=torch.float64),
                             ((p - p.mean(0)) ** 2).sum(0) if len(p) else torch.zeros(5, dtype=torch.float64))
                            for p in parts])
    union = torch.cat(parts)
    assert merged[0] == len(union)
    torch.testing.assert_close(merged[1], union.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged[2], ((union - union.mean(0)) ** 2).sum(0), rtol=1e-12, atol=1e-12)


def test_merged_reservoirs_are_a_uniform_sample_of_the_union():
    stream = torch.arange(20_000, dtype=torch.float32).unsqueeze(-1)
    parts, reservoirs = [stream[:3_000], stream[3_000:3_000], stream[3_000:]], []
    for seed, part in enumerate(parts):  # each rank samples with its own seed
        accumulator = _UnitAccumulator(1, None, HarvestConfig(sample_tokens=500, sample_seed=seed))
        for chunk in part.split(37):
            accumulator.update(chunk)
        reservoirs.append(accumulator.samples)
    sample = merge_reservoirs(reservoirs, [len(part) for part in parts], 500, seed=0).squeeze(-1)
    assert sample.shape == (500,) and len(sample.unique()) == 500
    # A uniform sample of 0..19999: mean 10000 (standard error ~258), 15% of it from the first part's 3000.
    assert abs(sample.mean().item() - 10_000) < 1_000
    assert abs((sample < 3_000).float().mean().item() - 0.15) < 0.06
    assert torch.equal(sample, merge_reservoirs(reservoirs, [len(part) for part in parts], 500, seed=0).squeeze(-1))
    with pytest.raises(HarvestError, match="do not fit streams"):
        merge_reservoirs(reservoirs, [10, 0, 17_000], 500, seed=0)


def test_the_command_module_does_not_import_torch():
    code = "import sys, workbench.harvest_cli; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------------------ two gloo processes vs one
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny Gemma 3 with a small byte-level BPE tokenizer trained on the corpus (fast to load in every process)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    from workbench import corpus

    directory = tmp_path_factory.mktemp("tiny-gemma")
    texts = [row.text for code in LANGS for row in corpus.monolingual(code, split="discovery", n=200)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    config = Gemma3TextConfig(vocab_size=len(fast), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
                              sliding_window=16, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).eval().save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _failing_harvest(*args, **kwargs):
    raise RuntimeError("NaN activations at blocks.1.mlp.hook_pre")


def _rank(rank: int, ports: tuple[int, int, int], checkpoint: Path, root: Path) -> None:
    """One process of a 2-process job, as torchrun would start it: the environment, then the harvests; in the last
    one rank 1 fails, and each rank writes the error it raised."""
    try:
        torch.set_num_threads(1)
        os.environ.update({"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
                           "MASTER_ADDR": "127.0.0.1"})
        for (name, job), port in zip((("mixed", MIXED), ("one-batch", ONE_BATCH)), ports[:2], strict=True):
            os.environ["MASTER_PORT"] = str(port)
            harvest_corpus(str(checkpoint), job["languages"], job["sites"], out=root / "distributed" / name,
                           config=job["config"], n_tokens=job["n_tokens"], max_length=job["max_length"],
                           batch_size=job["batch_size"], progress=False)
        os.environ["MASTER_PORT"] = str(ports[2])
        if rank == 1:
            workbench.distributed.harvest = _failing_harvest
        try:
            harvest_corpus(str(checkpoint), MIXED["languages"], MIXED["sites"], out=root / "distributed" / "failing",
                           config=MIXED["config"], n_tokens=MIXED["n_tokens"], max_length=MIXED["max_length"],
                           batch_size=MIXED["batch_size"], progress=False)
        except HarvestError as error:
            (root / "failures").mkdir(exist_ok=True)
            (root / "failures" / f"rank{rank}.txt").write_text(str(error))
    except BaseException:
        traceback.print_exc()
        os._exit(1)


@pytest.fixture(scope="module")
def harvests(checkpoint, tmp_path_factory) -> Path:
    """``single/<job>`` harvested by one process, ``distributed/<job>`` by two gloo processes (forked, so they start
    with the imports, the corpus and the model files already warm)."""
    root = tmp_path_factory.mktemp("harvests")
    saved = {name: os.environ.pop(name, None) for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run one thread each: the same kernels, the same floats
    try:
        for name, job in (("mixed", MIXED), ("one-batch", ONE_BATCH)):
            harvest_corpus(str(checkpoint), job["languages"], job["sites"], out=root / "single" / name,
                           config=job["config"], n_tokens=job["n_tokens"], max_length=job["max_length"],
                           batch_size=job["batch_size"], progress=False)
    finally:
        torch.set_num_threads(threads)
    saved["TOKENIZERS_PARALLELISM"] = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the parent's tokenizer threads do not survive a fork
    context = multiprocessing.get_context("fork")
    ports = (_free_port(), _free_port(), _free_port())
    processes = [context.Process(target=_rank, args=(rank, ports, checkpoint, root)) for rank in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
    assert [process.exitcode for process in processes] == [0, 0], "a rank failed (its traceback is above)"
    return root


def _groups_per_rank(checkpoint: Path, job: dict) -> list[set[str]]:
    from transformers import AutoTokenizer

    from workbench import corpus
    from workbench.activations import batch_texts, texts_with_budget

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    texts = {code: texts_with_budget(tokenizer, [r.text for r in corpus.monolingual(code) if r.text.strip()],
                                     job["n_tokens"], job["max_length"])[0] for code in job["languages"]}
    batches = batch_texts(tokenizer, texts, batch_size=job["batch_size"], max_length=job["max_length"])
    return [{label for batch in shard(batches, rank, 2) for label in batch.labels} for rank in (0, 1)]


def test_two_gloo_processes_save_the_statistics_of_one(harvests, checkpoint):
    mixed = _groups_per_rank(checkpoint, MIXED)
    assert mixed[0] & mixed[1] and mixed[0] ^ mixed[1], mixed  # groups on both ranks and on one rank only
    assert _groups_per_rank(checkpoint, ONE_BATCH) == [{"hi"}, set()]  # rank 1 harvests nothing
    for name in ("mixed", "one-batch"):
        single = ActivationStats.load(harvests / "single" / name)
        distributed = ActivationStats.load(harvests / "distributed" / name)
        assert distributed.sites == single.sites and distributed.groups == single.groups
        assert distributed.config == single.config
        assert distributed.metadata["world_size"] == 2 and single.metadata["world_size"] == 1
        assert distributed.metadata["n_tokens"] == single.metadata["n_tokens"]
        assert distributed.metadata["texts"] == single.metadata["texts"]
        assert set(distributed.tensors) == set(single.tensors)
        for key, expected in single.tensors.items():
            got = distributed.tensors[key]
            if key.endswith(("/mean", "/var")):
                torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6, msg=key)
            elif key.endswith("/samples"):
                count = int(single.tensors[key.replace("/samples", "/count")])
                assert got.shape == expected.shape == (min(CONFIG.sample_tokens, count), expected.shape[1]), key
                low, high = single.tensors[key.replace("samples", "min")], single.tensors[key.replace("samples", "max")]
                assert ((got >= low) & (got <= high)).all(), key
            else:  # count, frac_positive, min, max, histogram
                assert got.dtype == expected.dtype and torch.equal(got, expected), key
    assert sorted(path.name for path in (harvests / "distributed").iterdir()) == ["mixed", "one-batch"]


def test_a_rank_that_fails_makes_every_rank_raise_instead_of_waiting(harvests):
    """Rank 1's harvest raises before any collective: without the error exchange rank 0 would wait in the
    all-reduce until the process group's timeout (30 min; the fixture kills the job after 2)."""
    for rank in (0, 1):
        message = (harvests / "failures" / f"rank{rank}.txt").read_text()
        assert message == ("the distributed harvest failed on rank 1: RuntimeError: NaN activations at "
                           "blocks.1.mlp.hook_pre"), message
    assert not (harvests / "distributed" / "failing").exists()


def test_the_direction_pipeline_fits_every_method_on_a_distributed_harvest(harvests):
    from workbench.directions import DIRECTION_METHODS, compute_directions

    sets = {name: compute_directions(ActivationStats.load(harvests / name / "mixed"), "hi", "en")
            for name in ("single", "distributed")}
    assert set(sets["distributed"]) == set(DIRECTION_METHODS)
    for method, direction_set in sets["distributed"].items():
        assert direction_set.layers == (0, 1) and torch.isfinite(direction_set.units).all(), method
    # DiffMean reads the means: the same direction; PCA, LDA and the probe read token samples drawn per rank.
    torch.testing.assert_close(sets["distributed"]["diffmean"].units, sets["single"]["diffmean"].units,
                               rtol=1e-5, atol=1e-5)


def test_the_neuron_pipeline_reads_a_distributed_harvest(harvests, checkpoint, tmp_path):
    from typer.testing import CliRunner

    from workbench.inputs import InputError
    from workbench.models import load_model
    from workbench.neurons.cache import NeuronRunConfig, cached_gate_values, identify, language_statistics
    from workbench.neurons.cli import app
    from workbench.neurons.data import TokenDataConfig
    from workbench.neurons.masks import NeuronError, NeuronMask

    harvest = harvests / "distributed" / "mixed"
    model = load_model(str(checkpoint), backend="hf")
    tokens = TokenDataConfig(tokens_per_language=MIXED["n_tokens"], max_length=MIXED["max_length"], batch_tokens=192,
                             histogram_bins=CONFIG.histogram_bins, histogram_max_abs=CONFIG.histogram_max_abs)
    config = NeuronRunConfig(languages=LANGS, tokens=tokens, run_causal=False, compare_methods=False)
    # The pipeline's own per-language harvest of the same text: the same tokens and statistics.
    own = language_statistics(model, LANGS, tokens, cache_root=tmp_path / "cache", progress=False)
    loaded = ActivationStats.load(harvest)
    for code in LANGS:
        for layer in (0, 1):
            assert own[code].count(f"{layer}.mlp_pre", code) == loaded.count(f"{layer}.mlp_pre", code)
            torch.testing.assert_close(own[code].mean(f"{layer}.mlp_pre", code), loaded.mean(f"{layer}.mlp_pre", code),
                                       rtol=1e-5, atol=1e-5)
    for method in ("lape", "ap90"):
        from_harvest = identify(method, model, config, progress=False, harvest=harvest)
        assert from_harvest.languages == LANGS and from_harvest.config["harvest"] == str(harvest)
        assert from_harvest.config["data"]["hi"]["tokens"] == loaded.count("0.mlp_pre", "hi")
    values = cached_gate_values(model, LANGS, harvest=harvest)
    assert values["mean"].shape == (2, 32, len(LANGS))
    result = CliRunner().invoke(app, ["lape", "--langs", ",".join(LANGS), "--harvest", str(harvest), "--model",
                                      str(checkpoint), "--no-causal", "--no-compare", "--out", str(tmp_path / "lape"),
                                      "--cache", str(tmp_path / "cache"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["languages"] == list(LANGS)
    assert NeuronMask.load(tmp_path / "lape" / "mask").config["harvest"] == str(harvest)
    refused = CliRunner().invoke(app, ["ap90", "--harvest", str(tmp_path / "nothing"), "--model", "no-such-model"])
    assert isinstance(refused.exception, InputError) and "not a saved harvest" in str(refused.exception)
    with pytest.raises(NeuronError, match="has no de"):
        identify("lape", model, NeuronRunConfig(languages=("en", "de"), tokens=tokens), harvest=harvest)
    with pytest.raises(NeuronError, match="--kinds mlp_pre"):
        identify("lape", model, NeuronRunConfig(languages=("hi", "en"), tokens=tokens),
                 harvest=harvests / "distributed" / "one-batch")


# ------------------------------------------------------------------------------------------------ bad input
BAD = {
    "unknown language": ("--langs en,xx --sites mlp_pre", "xx"),
    "unknown site": ("--langs en --sites 3.resid_typo", "cannot parse site '3.resid_typo'"),
    "unknown split": ("--langs en --sites mlp_pre --split train", "unknown split 'train'"),
    "no tokens": ("--langs en --sites mlp_pre --n-tokens 0", "--n-tokens must be a positive integer"),
    "negative sample": ("--langs en --sites mlp_pre --sample-tokens -1", "sample_tokens must be >= 0"),
    "histogram of no site": ("--langs en --sites resid_post --kinds mlp_pre", "name no harvested site"),
    "out is a file": ("--langs en --sites mlp_pre --out {tmp}/file.txt", "is an existing file"),
    "torchrun without a rank": ("--langs en --sites mlp_pre", "incomplete torchrun environment"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_clear_line_before_any_model(name, tmp_path, monkeypatch, capsys):
    import typer

    import workbench.cli
    from workbench.harvest_cli import harvest_command

    app = typer.Typer()
    app.callback()(_root)
    app.command("harvest")(harvest_command)
    monkeypatch.setattr(workbench.cli, "app", app)
    monkeypatch.setattr("workbench.distributed.load_model", _no_model_loading)
    for variable in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    if name == "torchrun without a rank":
        monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / "file.txt").write_text("not a directory")
    arguments, message = BAD[name]
    if "--out" not in arguments:
        arguments += " --out {tmp}/out"
    monkeypatch.setattr("sys.argv", ["workbench", "harvest", *shlex.split(arguments.format(tmp=tmp_path))])
    with pytest.raises(SystemExit) as stop:
        workbench.cli.main()
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert stop.value.code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err
    assert not (tmp_path / "out").exists()


def _root() -> None:
    """The main command line, with only the harvest command mounted."""


def _no_model_loading(*args, **kwargs):
    raise AssertionError("a bad input must be refused before any model is loaded")


def test_the_distributed_harvest_leaves_wb_harvest_the_function():
    """``wb.harvest`` is the harvest function; the data-parallel module has another name so importing it never
    replaces that attribute of the package with a module."""
    import workbench as wb
    import workbench.distributed  # noqa: F401

    assert callable(wb.harvest) and wb.harvest.__module__ == "workbench.activations"
