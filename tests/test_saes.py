"""SAEs: SAELens training on a tiny model's activations, SAELens format round trips, fit checks, quality metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, StandardSAE, StandardSAEConfig, TopKSAE
from sae_lens.saes.sae import SAEMetadata

from workbench.activations import TokenBatch
from workbench.saes import (
    SAEError,
    SAEEvalConfig,
    SAETrainConfig,
    ce_recovered,
    check_sae_fits,
    evaluate_saes,
    fvu,
    harvest_buffer,
    load_pretrained_sae,
    load_sae,
    load_sae_dir,
    reconstruction_metrics,
    train_saes,
)
from workbench.saes.data import corpus_batches, shuffled_batches
from workbench.saes.metrics import json_safe


def make_train_cfg(**overrides) -> SAETrainConfig:
    """A config that trains a tiny SAE in about a second."""
    fields = dict(d_sae=64, k=4, n_tokens=1024, training_samples=20_000, batch_size=128, lr=3e-3,
                  lr_warm_up_steps=0, dead_feature_window=50, l1_coefficient=0.5, l0_coefficient=0.05,
                  languages=("en",))
    fields.update(overrides)
    return SAETrainConfig(**fields)


def random_batches(n_sequences: int = 48, length: int = 24, vocab: int = 64, seed: int = 0) -> list[TokenBatch]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab, (n_sequences, length), generator=generator)
    mask = torch.ones_like(tokens)
    return [TokenBatch(tokens[i:i + 16], mask[i:i + 16], ["rand"] * len(tokens[i:i + 16]))
            for i in range(0, n_sequences, 16)]


def counting_batches(n_sequences: int = 48, length: int = 24, vocab: int = 64, seed: int = 0) -> list[TokenBatch]:
    """Sequences that count up mod ``vocab`` from a random start: a task a tiny model learns in seconds."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(vocab, (n_sequences, 1), generator=generator)
    tokens = (starts + torch.arange(length)) % vocab
    mask = torch.ones_like(tokens)
    return [TokenBatch(tokens[i:i + 16], mask[i:i + 16], ["count"] * len(tokens[i:i + 16]))
            for i in range(0, n_sequences, 16)]


def counting_model():
    """A tiny 2-layer model trained to count: its CE is far below uniform, so ablations raise it."""
    from conftest import make_tiny_cfg
    from transformer_lens import HookedTransformer

    torch.manual_seed(0)
    model = HookedTransformer(make_tiny_cfg())
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    tokens = torch.cat([b.tokens for b in counting_batches(n_sequences=64, seed=9)])
    with one_thread():
        for _ in range(60):
            loss = model(tokens, return_type="loss")
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
    return model.eval()


def identity_sae(d_in: int, hook_name: str) -> StandardSAE:
    """ReLU(x) - ReLU(-x) = x: an SAE whose reconstruction is exact (for splice plumbing tests)."""
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=2 * d_in,
                                        metadata=SAEMetadata(hook_name=hook_name, model_name="tiny")))
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny SAEs train ~10x faster on one thread when other jobs share the CPU (thread oversubscription)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory):
    """Two sites of a tiny counting model, one harvest, TopK SAEs trained by SAELens and saved in its format."""
    model = counting_model()
    batches = counting_batches()
    buffer = harvest_buffer(model, batches, ["0.resid_post", "1.mlp_post"], exclude_bos=False, progress=False)
    out = tmp_path_factory.mktemp("saes")
    with one_thread():
        trained = train_saes(model, ["0.resid_post", "1.mlp_post"], out, make_train_cfg(), buffer=buffer,
                             progress=False)
    return model, buffer, out, trained


def test_one_harvest_fills_every_site_at_the_same_tokens(tiny_model):
    batches = random_batches()
    buffer = harvest_buffer(tiny_model, batches, ["0.resid_post", "1.mlp_post"], exclude_bos=False, progress=False)
    assert buffer.n_tokens == 48 * 24
    assert buffer.activations["blocks.0.hook_resid_post"].shape == (48 * 24, 16)
    assert buffer.activations["blocks.1.mlp.hook_post"].shape == (48 * 24, 32)
    _, cache = tiny_model.run_with_cache(batches[0].tokens)
    assert torch.allclose(buffer.activations["blocks.1.mlp.hook_post"][:24], cache["blocks.1.mlp.hook_post"][0],
                          atol=1e-5)


def test_harvest_refuses_a_buffer_over_the_memory_cap_without_a_spill_folder(tiny_model):
    with pytest.raises(SAEError, match="GiB.*spill_dir"):
        harvest_buffer(tiny_model, random_batches(), ["0.resid_post"], exclude_bos=False, progress=False,
                       max_gib=1e-6)


def test_a_buffer_over_the_memory_cap_goes_to_disk_and_trains_the_same_sae(tiny_model, tmp_path):
    batches = random_batches()
    sites = ["0.resid_post", "1.mlp_post"]
    in_memory = harvest_buffer(tiny_model, batches, sites, exclude_bos=False, progress=False)
    on_disk = harvest_buffer(tiny_model, batches, sites, exclude_bos=False, progress=False, max_gib=1e-6,
                             spill_dir=tmp_path / "spill")
    assert in_memory.spill_dir is None and on_disk.spill_dir == tmp_path / "spill"
    assert sorted(p.name for p in on_disk.spill_dir.iterdir()) == ["blocks.0.hook_resid_post.npy",
                                                                   "blocks.1.mlp.hook_post.npy"]
    for name, activations in in_memory.activations.items():
        assert torch.equal(on_disk.activations[name], activations)
    with one_thread():
        trained = {label: train_saes(tiny_model, ["1.mlp_post"], tmp_path / label, make_train_cfg(),
                                     buffer=buffer, progress=False)["blocks.1.mlp.hook_post"]
                   for label, buffer in (("memory", in_memory), ("disk", on_disk))}
    assert torch.equal(trained["memory"].sae.W_dec, trained["disk"].sae.W_dec)
    assert trained["disk"].record["buffer_on_disk"] and not trained["memory"].record["buffer_on_disk"]
    on_disk.release()
    assert not (tmp_path / "spill").exists() and on_disk.activations == {}


def test_disk_room_for_a_spilled_buffer_is_checked_before_the_harvest(tiny_model, tmp_path, monkeypatch):
    import shutil

    full = shutil.disk_usage(tmp_path)._replace(free=0)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    config = make_train_cfg(n_tokens=600, training_samples=1024, max_buffer_gib=1e-6)
    with pytest.raises(SAEError, match="GiB on disk"):  # the tiny model has no tokenizer: the check comes first
        train_saes(tiny_model, ["0.resid_post"], tmp_path, config, progress=False)


def test_trained_saes_are_saelens_directories_that_reconstruct(tiny_trained):
    model, buffer, out, trained = tiny_trained
    assert set(trained) == {"blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"}
    for name, site in trained.items():
        loaded = SAE.load_from_disk(str(out / name))
        assert isinstance(loaded, TopKSAE) and loaded.cfg.metadata.hook_name == name
        assert torch.equal(loaded.W_dec, site.sae.W_dec)
        x = buffer.activations[name]
        with torch.no_grad():
            latents = loaded.encode(x)
        assert int((latents != 0).sum(-1).max()) <= 4
        # trained: far better than the best constant reconstruction (FVU 1)
        assert site.record["train_fit"]["fvu"] < 0.5, site.record["train_fit"]
        record = json.loads((out / name / "training.json").read_text())
        assert record["tokens"] == buffer.n_tokens and record["steps"] == 20_000 // 128
        assert record["config"]["architecture"] == "topk" and record["train_seconds"] > 0


def test_training_is_reused_when_nothing_changed(tiny_trained):
    model, _, out, trained = tiny_trained
    again = train_saes(model, ["0.resid_post", "1.mlp_post"], out, make_train_cfg(), progress=False)
    assert all(site.reused for site in again.values())
    assert torch.equal(again["blocks.1.mlp.hook_post"].sae.W_enc, trained["blocks.1.mlp.hook_post"].sae.W_enc)
    loaded = load_sae_dir(out, model)
    assert list(loaded) == ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
    with pytest.raises(SAEError, match="no SAE for blocks.1.hook_resid_post"):
        load_sae_dir(out, model, sites=["1.resid_post"])


@pytest.mark.parametrize("architecture,cls", [("jumprelu", JumpReLUSAE), ("standard", StandardSAE)])
def test_l1_and_jumprelu_variants_train_and_load(tiny_model, tmp_path, architecture, cls):
    buffer = harvest_buffer(tiny_model, random_batches(), ["0.resid_post"], exclude_bos=False, progress=False)
    with one_thread():
        trained = train_saes(tiny_model, ["0.resid_post"], tmp_path, make_train_cfg(architecture=architecture),
                             buffer=buffer, progress=False)
    sae = load_sae(tmp_path / "blocks.0.hook_resid_post", tiny_model)
    assert isinstance(sae, cls)
    fit = trained["blocks.0.hook_resid_post"].record["train_fit"]
    assert fit["fvu"] < 0.6 and fit["l0"] < 64, fit


def test_shuffled_batches_cover_the_buffer_each_epoch():
    data = torch.arange(10.0).unsqueeze(-1)
    stream = shuffled_batches(data, 5, seed=0)
    epoch = torch.cat([next(stream), next(stream)]).flatten().sort().values
    assert torch.equal(epoch, torch.arange(10.0))


def test_fit_check_names_wrong_width_and_missing_hooks(tiny_model):
    wrong_width = identity_sae(8, "blocks.0.hook_resid_post")
    with pytest.raises(SAEError, match="d_in=8.*width 16"):
        check_sae_fits(wrong_width, tiny_model)
    with pytest.raises(SAEError, match="layers 0..1"):
        check_sae_fits(identity_sae(16, "blocks.5.hook_resid_post"), tiny_model)
    misspelt = identity_sae(16, "blocks.0.hook_resid_pst")
    with pytest.raises(SAEError, match="blocks.0.hook_resid_post"):
        check_sae_fits(misspelt, tiny_model)
    assert check_sae_fits(identity_sae(32, "blocks.1.mlp.hook_post"), tiny_model).kind == "mlp_post"


def test_load_sae_rejects_a_directory_that_is_not_an_sae(tmp_path):
    with pytest.raises(SAEError, match="not an SAE directory"):
        load_sae(tmp_path)


def _released_folder(directory, d_in: int = 16, d_sae: int = 32, seed: int = 0):
    """A Gemma Scope 2 folder as released: params.safetensors with the release's tensor names."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    shapes = {"w_enc": (d_in, d_sae), "w_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    tensors = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    tensors["threshold"] = torch.rand(d_sae, generator=generator)
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "params.safetensors"))
    return tensors


def test_a_released_gemma_scope_2_folder_loads_offline_as_a_jumprelu_sae(tiny_model, tmp_path):
    released = tmp_path / "gemma-scope-2-270m-pt" / "resid_post"
    tensors = _released_folder(released / "layer_1_width_32_l0_small")
    sae = load_sae(released / "layer_1_width_32_l0_small", tiny_model)
    assert isinstance(sae, JumpReLUSAE) and sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    pre = x @ tensors["w_enc"] + tensors["b_enc"]
    expected = torch.where(pre > tensors["threshold"], pre, torch.zeros_like(pre)).relu()
    torch.testing.assert_close(sae.encode(x), expected)
    torch.testing.assert_close(sae.decode(expected), expected @ tensors["w_dec"] + tensors["b_dec"])
    assert list(load_sae_dir(tmp_path / "gemma-scope-2-270m-pt", tiny_model)) == ["blocks.1.hook_resid_post"]

    _released_folder(released / "layer_1_width_32_l0_big", seed=2)
    with pytest.raises(SAEError, match="2 SAEs for blocks.1.hook_resid_post"):
        load_sae_dir(tmp_path / "gemma-scope-2-270m-pt", tiny_model)
    _released_folder(tmp_path / "renamed" / "my_sae")
    with pytest.raises(SAEError, match="cannot read the site and layer"):
        load_sae(tmp_path / "renamed" / "my_sae")
    _released_folder(tmp_path / "other" / "resid_post" / "layer_1_width_64", d_sae=64)
    (tmp_path / "other" / "resid_post" / "layer_1_width_64" / "params.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(SAEError, match="cannot be read"):
        load_sae(tmp_path / "other" / "resid_post" / "layer_1_width_64")


def _fake_hub_cache(root, repo_id: str, folder: str, source) -> None:
    """The layout huggingface_hub reads offline: models--org--name/refs/main + snapshots/<commit>/<files>."""
    commit = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit / folder
    snapshot.mkdir(parents=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        (snapshot / name).write_bytes((source / name).read_bytes())


def test_pretrained_release_loads_offline_from_the_hub_cache(tiny_model, tmp_path, monkeypatch):
    import huggingface_hub.constants

    saved = tmp_path / "saved"
    identity_sae(16, "blocks.0.hook_resid_post").save_model(saved)
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "local-org/tiny-saes", "blocks.0.hook_resid_post", saved)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    sae = load_pretrained_sae("local-org/tiny-saes", "blocks.0.hook_resid_post", tiny_model)
    assert isinstance(sae, StandardSAE) and torch.equal(sae.W_enc, identity_sae(16, "x").W_enc)
    with pytest.raises(SAEError, match="cannot load pretrained SAE"):
        load_pretrained_sae("no-such-release", "blocks.0.hook_resid_post")


def test_pretrained_with_a_wrong_width_is_refused(tiny_model, tmp_path, monkeypatch):
    import huggingface_hub.constants

    saved = tmp_path / "saved"
    identity_sae(640, "blocks.6.hook_resid_post").save_model(saved)
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "local-org/gemma-saes", "layer_6", saved)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SAEError, match="layers 0..1"):
        load_pretrained_sae("local-org/gemma-saes", "layer_6", tiny_model)


def test_fvu_and_ce_recovered_formulas():
    x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    assert fvu(x, x) == 0.0
    assert math.isclose(fvu(x, x.mean(0).expand_as(x)), 1.0, rel_tol=1e-9)
    assert math.isclose(fvu(x, 0.5 * x + 0.5 * x.mean(0)), 0.25, rel_tol=1e-6)
    latents = torch.zeros(100, 4)
    latents[:, 0] = 1.0
    latents[::2, 1] = 2.0
    metrics = reconstruction_metrics(x, x, latents)
    assert metrics["l0"] == 1.5 and metrics["dead_share"] == 0.5
    assert ce_recovered(2.0, 2.0, 6.0) == 1.0 and ce_recovered(2.0, 6.0, 6.0) == 0.0
    assert ce_recovered(2.0, 3.0, 6.0) == 0.75 and math.isnan(ce_recovered(2.0, 3.0, 1.0))
    assert json_safe({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0], "b": None}


def test_splice_eval_of_an_exact_sae_recovers_all_ce(tiny_trained):
    model = tiny_trained[0]
    batches = counting_batches(n_sequences=16, seed=3)
    held_out = harvest_buffer(model, batches, ["0.resid_post"], exclude_bos=False, progress=False)
    reports = evaluate_saes(model, {"blocks.0.hook_resid_post": identity_sae(16, "blocks.0.hook_resid_post")},
                            SAEEvalConfig(languages=("en",)), held_out=held_out, ce_batches=batches, progress=False)
    report = reports["blocks.0.hook_resid_post"]
    assert report["fvu"] < 1e-10 and report["dead_share"] == 0.0
    assert math.isclose(report["ce_spliced"], report["ce_clean"], rel_tol=1e-5)
    assert report["ce_clean"] < 1.0 and report["ce_zero_ablated"] > report["ce_clean"] + 1.0
    assert math.isclose(report["ce_recovered_zero"], 1.0, abs_tol=1e-4)


def test_splice_eval_of_a_trained_sae_sits_between_clean_and_ablated(tiny_trained):
    model, buffer, _, trained = tiny_trained
    saes = {name: site.sae for name, site in trained.items()}
    reports = evaluate_saes(model, saes, SAEEvalConfig(languages=("en",)), held_out=buffer,
                            ce_batches=counting_batches(seed=1), progress=False)
    for report in reports.values():
        assert report["ce_clean"] < report["ce_spliced"] < report["ce_zero_ablated"]
        assert 0.0 < report["ce_recovered_zero"] < 1.0
        assert {"ce_recovered_mean", "fvu_by_language", "l0", "dead_share"} <= report.keys()


def test_config_validation_is_early_and_clear():
    with pytest.raises(SAEError, match="unknown SAE architecture"):
        SAETrainConfig(architecture="gated")
    with pytest.raises(SAEError, match="k <= d_sae"):
        SAETrainConfig(d_sae=8, k=16)
    with pytest.raises(ValueError, match="xx"):
        SAETrainConfig(languages=("xx",))
    with pytest.raises(SAEError, match="baseline"):
        SAEEvalConfig(baselines=("median",))


def test_expansion_factor_sets_each_sites_width(tiny_model, tmp_path):
    buffer = harvest_buffer(tiny_model, random_batches(), ["0.resid_post", "0.mlp_post"], exclude_bos=False,
                            progress=False)
    config = make_train_cfg(expansion_factor=1.5, k=4)
    with one_thread():
        trained = train_saes(tiny_model, ["0.resid_post", "0.mlp_post"], tmp_path, config, buffer=buffer,
                             progress=False)
    for name, site in trained.items():
        d_in = int(buffer.activations[name].shape[-1])
        assert site.sae.cfg.d_sae == site.record["d_sae"] == round(1.5 * d_in)
    assert trained["blocks.0.mlp.hook_post"].sae.cfg.d_sae > trained["blocks.0.hook_resid_post"].sae.cfg.d_sae
    with pytest.raises(SAEError, match="expansion_factor must be > 0"):
        SAETrainConfig(expansion_factor=0.0)
    with pytest.raises(SAEError, match="exceeds the 8 latents"):
        SAETrainConfig(expansion_factor=0.5, k=16).width(16)


def test_qa_share_takes_that_share_of_each_language_from_question_answer_contexts():
    from transformers import AutoTokenizer

    from workbench.embedded import ensure_embedded_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_checkpoint())
    batches, counts = corpus_batches(tokenizer, ["hi", "es"], "discovery", 4000, qa_share=0.5, max_length=64)
    texts = [tokenizer.decode(row[mask.bool()], skip_special_tokens=True)
             for batch in batches for row, mask in zip(batch.tokens, batch.attention_mask, strict=True)]
    qa = [text for text in texts if text.startswith("Q: ") and "\nA: " in text]
    assert qa and len(qa) < len(texts)  # both kinds of text
    assert all(count >= 2000 for count in counts.values()), counts
    plain, _ = corpus_batches(tokenizer, ["hi"], "discovery", 2000, max_length=64)
    assert not any(tokenizer.decode(row, skip_special_tokens=True).startswith("Q: ") for b in plain for row in b.tokens)
    # a model loaded with its chat template gets its contexts in that template
    from workbench.prompting import ChatFormat

    chat = ChatFormat(prefix="<start_of_turn>user\n", suffix="<end_of_turn>\n<start_of_turn>model\n")
    chatted, _ = corpus_batches(tokenizer, ["es"], "discovery", 2000, qa_share=1.0, max_length=64, prompt_format=chat)
    texts = [tokenizer.decode(row[mask.bool()]) for batch in chatted
             for row, mask in zip(batch.tokens, batch.attention_mask, strict=True)]
    assert texts and all(text.startswith("<bos><start_of_turn>user\n") and "<start_of_turn>model\n" in text
                         and "Q: " not in text for text in texts)
    # fields added later leave older SAEs' cache keys unchanged at their defaults
    assert "qa_share" not in SAETrainConfig().to_dict() and SAETrainConfig(qa_share=0.25).to_dict()["qa_share"] == 0.25


def test_languages_short_of_text_leave_their_share_to_the_others():
    from transformers import AutoTokenizer

    from workbench.embedded import ensure_embedded_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_checkpoint())
    _, alone = corpus_batches(tokenizer, ["ar"], "discovery", 10**7, max_length=64)
    _, counts = corpus_batches(tokenizer, ["ar", "es"], "discovery", alone["ar"] + 30_000, max_length=64)
    assert counts["ar"] == alone["ar"]  # all the Arabic there is
    assert 30_000 <= counts["es"] < 30_000 + 64  # Spanish fills the rest (within one text)
    _, equal = corpus_batches(tokenizer, ["ar", "es"], "discovery", 4000, max_length=64)
    assert all(2000 <= count < 2000 + 64 for count in equal.values()), equal
