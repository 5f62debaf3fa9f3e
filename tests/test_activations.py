import json
import os
import subprocess
import sys

import pytest
import torch

from workbench.activations import (
    ActivationStats,
    HarvestConfig,
    HarvestError,
    TokenBatch,
    _UnitAccumulator,
    batch_texts,
    harvest,
    histogram_cdf,
    histogram_quantile,
)
from workbench.sites import Site

BOS, PAD = 1, 0
SITES = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post", "blocks.1.mlp.hook_pre"]
WITH_HISTOGRAMS = HarvestConfig(histogram_kinds=("mlp_pre", "mlp_post"))


def _batch(rows: list[list[int]], labels: list[str], pad_to: int) -> TokenBatch:
    tokens = torch.full((len(rows), pad_to), PAD)
    mask = torch.zeros_like(tokens)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return TokenBatch(tokens, mask, labels)


def _direct(model, rows_by_group, site):
    """Reference: run each sequence alone (no padding) and pool its non-BOS activations."""
    pooled = {}
    for group, rows in rows_by_group.items():
        acts = []
        for row in rows:
            _, cache = model.run_with_cache(torch.tensor([row]), names_filter=site)
            acts.append(cache[site][0, 1:])
        pooled[group] = torch.cat(acts)
    return pooled


ROWS = {
    "aa": [[BOS, 5, 6, 7, 8, 9], [BOS, 10, 11], [BOS, 12, 13, 14, 15, 16, 17, 18]],
    "bb": [[BOS, 40, 41, 42], [BOS, 43, 44, 45, 46, 47]],
}


def test_statistics_equal_a_direct_computation_with_padding_and_bos_excluded(tiny_model):
    # Mixed-group, right-padded batches: padding and BOS must not leak into any statistic.
    batches = [_batch([ROWS["aa"][0], ROWS["bb"][0], ROWS["aa"][1]], ["aa", "bb", "aa"], pad_to=10),
               _batch([ROWS["bb"][1], ROWS["aa"][2]], ["bb", "aa"], pad_to=12)]
    stats = harvest(tiny_model, batches, SITES, bos_token_id=BOS, progress=False)
    assert stats.groups == ["aa", "bb"]
    for site in SITES:
        for group, acts in _direct(tiny_model, ROWS, site).items():
            assert stats.count(site, group) == acts.shape[0]
            torch.testing.assert_close(stats.mean(site, group), acts.mean(0), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(stats.var(site, group), acts.var(0, unbiased=False), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(stats.frac_positive(site, group), (acts > 0).float().mean(0))
            torch.testing.assert_close(stats.maximum(site, group), acts.max(0).values)


def test_bos_can_be_kept(tiny_model):
    batches = [_batch(ROWS["aa"], ["aa"] * 3, pad_to=8)]
    kept = harvest(tiny_model, batches, SITES[:1], config=HarvestConfig(exclude_bos=False), bos_token_id=BOS,
                   progress=False)
    dropped = harvest(tiny_model, batches, SITES[:1], bos_token_id=BOS, progress=False)
    assert kept.count(SITES[0], "aa") == dropped.count(SITES[0], "aa") + 3


def test_forward_stops_before_the_unembedding(tiny_model):
    calls = []
    tiny_model.ln_final.hook_normalized.add_hook(lambda x, hook: calls.append(hook.name))
    try:
        harvest(tiny_model, [_batch(ROWS["aa"], ["aa"] * 3, pad_to=8)], ["blocks.0.hook_resid_post"],
                bos_token_id=BOS, progress=False)
        assert calls == []
        tiny_model(torch.tensor([ROWS["aa"][0]]))
        assert calls == ["ln_final.hook_normalized"]  # the probe itself works
    finally:
        tiny_model.reset_hooks()


def test_memory_does_not_grow_with_tokens(tiny_model):
    one = harvest(tiny_model, [_batch(ROWS["aa"], ["aa"] * 3, pad_to=8)], SITES, config=WITH_HISTOGRAMS,
                  bos_token_id=BOS, progress=False)
    many = harvest(tiny_model, [_batch(ROWS["aa"], ["aa"] * 3, pad_to=8)] * 20, SITES, config=WITH_HISTOGRAMS,
                   bos_token_id=BOS, progress=False)
    assert {k: v.shape for k, v in one.tensors.items()} == {k: v.shape for k, v in many.tensors.items()}
    assert many.count(SITES[0], "aa") == 20 * one.count(SITES[0], "aa")


NEURON_STUDY_PEAKS = """
import json, resource, sys
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig
from workbench.hf_backend import HFHookedModel
from workbench.models import load_tokenizer
from workbench.neurons.cache import language_statistics
from workbench.neurons.data import TokenDataConfig
from workbench.sites import Site

tokenizer = load_tokenizer()
config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=1024, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
                          sliding_window=16)
torch.manual_seed(0)
model = HFHookedModel(Gemma3ForCausalLM(config).eval(), tokenizer, "tiny-wide-gemma3")
result = {}
for tokens in (10_000, 100_000):
    stats = language_statistics(model, ["en"], TokenDataConfig(tokens_per_language=tokens),
                                cache_root=f"{sys.argv[1]}/{tokens}", progress=False)["en"]
    result[tokens] = {"tokens": stats.count(Site(0, "mlp_pre"), "en"),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
print(json.dumps(result))
"""


def test_the_neuron_studys_harvest_streams_in_constant_memory(tmp_path):
    """The per-language harvest LAPE / 90p / CLAS read (``language_statistics``, every ``mlp_pre`` unit with
    histograms) keeps per-unit accumulators only: ten times the tokens raise a fresh process's peak memory by far
    less than keeping the activations would (100k tokens x 2 layers x 1024 units x 4 bytes = 800 MB; measured:
    +47 MB, mostly the tokenised text, and +876 MB with every activation kept)."""
    run = subprocess.run([sys.executable, "-c", NEURON_STUDY_PEAKS, str(tmp_path)], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    small, large = json.loads(run.stdout.strip().splitlines()[-1]).values()
    assert large["tokens"] > 8 * small["tokens"] > 8 * 9_000
    assert large["peak_mb"] - small["peak_mb"] < 200, (small, large)


@pytest.mark.parametrize("n", [17, 2000])
def test_quantiles_within_one_bin_of_exact(n):
    torch.manual_seed(n)
    config = HarvestConfig()
    x = torch.randn(n, 48) * torch.logspace(-2, 2, 48) + torch.linspace(-3, 3, 48)
    acc = _UnitAccumulator(48, config.bin_edges(), config)
    for chunk in x.split(301):
        acc.update(chunk)
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        exact = torch.quantile(x, q, dim=0)
        approx = histogram_quantile(acc.histogram, config.bin_edges(), q, acc.minimum, acc.maximum)
        bin_width = exact.abs() * 0.047 + 2.5e-3
        assert ((approx - exact).abs() <= bin_width).all(), q


def test_cdf_is_consistent_with_quantiles():
    torch.manual_seed(0)
    config = HarvestConfig()
    x = torch.randn(5000, 8) * 3
    acc = _UnitAccumulator(8, config.bin_edges(), config)
    acc.update(x)
    for q in (0.1, 0.5, 0.9):
        value = torch.quantile(x, q, dim=0)
        cdf = histogram_cdf(acc.histogram, config.bin_edges(), value, acc.minimum, acc.maximum)
        assert (cdf - q).abs().max() < 0.02


def test_save_load_round_trip(tiny_model, tmp_path):
    stats = harvest(tiny_model, [_batch(ROWS["bb"], ["bb"] * 2, pad_to=8)], SITES, config=WITH_HISTOGRAMS,
                    bos_token_id=BOS, progress=False)
    loaded = ActivationStats.load(stats.save(tmp_path / "stats"))
    assert loaded.sites == stats.sites and loaded.groups == stats.groups and loaded.config == stats.config
    torch.testing.assert_close(loaded.quantile(SITES[1], "bb", 0.9), stats.quantile(SITES[1], "bb", 0.9))
    assert loaded.stack("frac_positive", "mlp_pre").shape == (1, 32, 1)


def test_clear_errors(tiny_model):
    with pytest.raises(HarvestError, match="no texts to harvest for group"):
        batch_texts(None, {"en": []})
    with pytest.raises(HarvestError, match="no usable tokens"):
        harvest(tiny_model, [], SITES, bos_token_id=BOS, progress=False)
    stats = harvest(tiny_model, [_batch(ROWS["bb"], ["bb"] * 2, pad_to=8)], SITES, config=WITH_HISTOGRAMS,
                    bos_token_id=BOS, progress=False)
    with pytest.raises(HarvestError, match="harvested groups: bb"):
        stats.mean(SITES[0], "en")
    with pytest.raises(HarvestError, match="histogram_kinds"):
        stats.quantile(SITES[0], "bb", 0.5)
    with pytest.raises(HarvestError, match="was not harvested"):
        stats.mean(Site(0, "mlp_out"), "bb")


@pytest.mark.model
def test_real_model_statistics_match_direct_computation_on_both_backends(gemma_hooked, gemma_bridge):
    texts = {"en": ["The quick brown fox jumps over the lazy dog.", "Short one."],
             "es": ["El rápido zorro marrón salta sobre el perro perezoso.", "Hola mundo, ¿qué tal?"]}
    sites = ["blocks.4.hook_resid_post", "blocks.4.mlp.hook_post", "blocks.4.mlp.hook_pre"]
    tokenizer = gemma_hooked.tokenizer
    rows = {group: [tokenizer(text)["input_ids"] for text in group_texts] for group, group_texts in texts.items()}
    for model in (gemma_hooked, gemma_bridge):
        stats = harvest(model, batch_texts(tokenizer, texts, batch_size=2), sites, progress=False)
        for site in sites:
            for group, acts in _direct(gemma_hooked, rows, site).items():
                assert stats.count(site, group) == acts.shape[0]
                scale = acts.abs().max()
                torch.testing.assert_close(stats.mean(site, group), acts.mean(0), atol=2e-5 * scale, rtol=1e-4)
                torch.testing.assert_close(stats.frac_positive(site, group)[acts.abs().amin(0) > 1e-3],
                                           (acts > 0).float().mean(0)[acts.abs().amin(0) > 1e-3])


def test_token_samples_are_a_uniform_reservoir():
    accumulator = _UnitAccumulator(1, None, HarvestConfig(sample_tokens=500, sample_seed=3))
    stream = torch.arange(20_000, dtype=torch.float32).unsqueeze(-1)
    for chunk in stream.split(37):
        accumulator.update(chunk)
    sample = accumulator.samples.squeeze(-1)
    assert sample.shape == (500,) and len(sample.unique()) == 500
    # A uniform sample of 0..19999: mean 10000 with standard error ~258; quartiles near 5000 / 15000.
    assert abs(sample.mean().item() - 10_000) < 1_000
    assert abs((sample < 5_000).float().mean().item() - 0.25) < 0.07


def test_token_samples_keep_every_row_below_capacity(tiny_model):
    config = HarvestConfig(sample_tokens=100)
    stats = harvest(tiny_model, [_batch(ROWS["aa"], ["aa"] * 3, pad_to=9)], SITES[:1], config=config,
                    bos_token_id=BOS, progress=False)
    direct = _direct(tiny_model, {"aa": ROWS["aa"]}, SITES[0])["aa"]
    kept = stats.samples(SITES[0], "aa")
    assert kept.shape == direct.shape
    torch.testing.assert_close(kept.sum(0), direct.sum(0), atol=1e-4, rtol=1e-4)
    with pytest.raises(HarvestError, match="sample_tokens"):
        harvest(tiny_model, [_batch(ROWS["aa"], ["aa"] * 3, pad_to=9)], SITES[:1], bos_token_id=BOS,
                progress=False).samples(SITES[0], "aa")
