"""Train one SAE per site with SAELens (its ``SAETrainer`` and training SAE classes) on shipped-corpus activations.

One harvest serves every site: the corpus text is run once through the fast backend, stopping after the deepest
site, and each site's activations fill a float32 buffer (see :mod:`workbench.saes.data` for its size), in memory
up to ``max_buffer_gib`` and in memory-mapped files in ``out_dir/.buffer`` beyond (deleted after training).
Each SAE is then trained by ``sae_lens.SAETrainer`` on a data provider that cycles through its buffer in
reshuffled minibatches (SAELens 6.x takes any ``Iterator[Tensor]`` as its ``DataProvider``), with SAELens' input
normalisation estimated at the start and folded into the weights at the end. The inference SAE is saved in
SAELens' format (``save_inference_model``) in one directory per site, with ``training.json`` recording the tokens,
samples, steps, seconds, config, model and package versions.

A site whose directory already holds an SAE trained with the same config on the same model is loaded, not
retrained (``force=True`` retrains).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.artifacts import atomic_write_json
from workbench.backends import Model
from workbench.models import model_metadata
from workbench.prompting import prompt_format
from workbench.saes.config import SAEError, SAETrainConfig
from workbench.saes.data import (
    ActivationBuffer,
    buffer_gib,
    check_disk_room,
    column_moments,
    corpus_batches,
    harvest_buffer,
    shuffled_batches,
)
from workbench.saes.io import TRAINING_FILE, load_sae, read_json
from workbench.saes.metrics import reconstruction_metrics
from workbench.sites import Site, resolve_site

_NORM_ESTIMATE_BATCHES = 32
_SPILL_DIR = ".buffer"
"""Folder in ``out_dir`` of a buffer too large for memory (deleted after training)."""


def build_training_sae(config: SAETrainConfig, d_in: int, hook_name: str, model_name: str = "unknown") -> Any:
    """A fresh SAELens training SAE of ``config.architecture`` for a site of width ``d_in``."""
    from sae_lens import (
        JumpReLUTrainingSAE,
        JumpReLUTrainingSAEConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    metadata = SAEMetadata(hook_name=hook_name, model_name=model_name, prepend_bos=True, context_size=None)
    common = {"d_in": d_in, "d_sae": config.width(d_in), "device": config.device, "dtype": "float32",
              "normalize_activations": config.normalize_activations, "metadata": metadata}
    torch.manual_seed(config.seed)
    if config.architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=config.k, **common))
    if config.architecture == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(
            l0_coefficient=config.l0_coefficient, jumprelu_init_threshold=config.jumprelu_init_threshold,
            jumprelu_bandwidth=config.jumprelu_bandwidth, jumprelu_ste_to_input=config.jumprelu_ste_to_input,
            l0_warm_up_steps=config.total_steps // 10, **common))
    return StandardTrainingSAE(StandardTrainingSAEConfig(
        l1_coefficient=config.l1_coefficient, l1_warm_up_steps=config.total_steps // 10, **common))


def trainer_config(config: SAETrainConfig) -> Any:
    """The ``sae_lens`` trainer config for ``config`` (no wandb, no checkpoints)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    steps = config.total_steps
    return SAETrainerConfig(
        total_training_samples=steps * config.batch_size, train_batch_size_samples=config.batch_size,
        lr=config.lr, lr_end=config.lr, lr_scheduler_name="constant",
        lr_warm_up_steps=min(config.lr_warm_up_steps, max(steps // 10, 0)),
        lr_decay_steps=int(steps * config.lr_decay_fraction), device=config.device,
        dead_feature_window=config.dead_feature_window, feature_sampling_window=max(steps, 1),
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=_NORM_ESTIMATE_BATCHES,
    )


def fit_sae(data: Float[Tensor, "token d"], config: SAETrainConfig, hook_name: str, model_name: str = "unknown"
            ) -> tuple[Any, Any]:
    """Train a SAELens training SAE on ``data`` with ``SAETrainer``; returns (training SAE, trainer).

    The input scaling (``expected_average_only_in``: mean norm -> sqrt(d_in)) is computed from the whole buffer
    rather than from a few batches, and with ``b_dec_init="mean"`` the decoder bias starts at the (scaled) data
    mean: without it a large shared offset (the residual stream's mean direction) makes a few TopK latents win on
    every token and most latents die.
    """
    from sae_lens import SAETrainer

    if data.shape[0] < config.batch_size:
        raise SAEError(f"{data.shape[0]} tokens are fewer than one batch ({config.batch_size})")
    sae = build_training_sae(config, data.shape[-1], hook_name, model_name)
    trainer = SAETrainer(cfg=trainer_config(config), sae=sae,
                         data_provider=shuffled_batches(data, config.batch_size, config.seed))
    mean, mean_norm = column_moments(data)
    scale = 1.0
    if config.normalize_activations == "expected_average_only_in":
        scale = data.shape[-1] ** 0.5 / mean_norm
        trainer.activation_scaler.scaling_factor = scale
    if config.b_dec_init == "mean":
        with torch.no_grad():
            sae.b_dec.copy_(mean.float() * scale)
    trained = trainer.fit()
    return trained, trainer


@dataclass
class TrainedSite:
    """One site's SAE after :func:`train_saes`: the loaded inference SAE, where it is, and its training record."""

    site: Site
    sae: Any
    directory: Path
    record: dict[str, Any]
    reused: bool


def _save_inference_sae(sae: Any, directory: Path, trainer: Any) -> None:
    """Write the inference SAE (+ SAELens' sparsity file) to ``directory`` atomically (staging dir + rename)."""
    from sae_lens.constants import SPARSITY_FILENAME
    from safetensors.torch import save_file

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        sae.save_inference_model(str(staging))
        save_file({"sparsity": trainer.log_feature_sparsity}, str(staging / SPARSITY_FILENAME))
        staging.chmod(0o755)  # mkdtemp makes it private; an SAE directory is an ordinary artifact
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _reusable(directory: Path, config: SAETrainConfig, model: Model) -> bool:
    record = read_json(directory / TRAINING_FILE)
    if record is None:
        return False
    same_config = record.get("config") == json.loads(json.dumps(config.to_dict()))
    return same_config and record.get("model", {}).get("name") == model_metadata(model).get("name")


def train_saes(model: Model, sites: Sequence[Site | str], out_dir: str | Path, config: SAETrainConfig | None = None,
               *, force: bool = False, progress: bool = True, buffer: ActivationBuffer | None = None,
               threads: int | None = None) -> dict[str, TrainedSite]:
    """Train one SAE per site (one shared harvest) and save each in ``out_dir/<hook name>/`` in SAELens' format.

    ``buffer`` (e.g. from :func:`workbench.saes.data.harvest_buffer` on token batches of your own) replaces the
    corpus harvest. ``threads`` sets torch's CPU threads while the SAEs train (restored afterwards; 1 trains ~2x
    faster than 2 when other jobs share 2 cores); it does not change the result. Returns hook name ->
    :class:`TrainedSite`.
    """
    config = config or SAETrainConfig()
    resolved = list(dict.fromkeys(resolve_site(model, site) for site in sites))
    if not resolved:
        raise SAEError("no sites given; pass e.g. ['6.resid_post', '6.mlp_out']")
    out_dir = Path(out_dir)
    results: dict[str, TrainedSite] = {}
    todo = []
    for site in resolved:
        directory = out_dir / site.hook_name
        if not force and buffer is None and _reusable(directory, config, model):
            results[site.hook_name] = TrainedSite(site, load_sae(directory, model), directory,
                                                  read_json(directory / TRAINING_FILE) or {}, reused=True)
        else:
            todo.append(site)
    if not todo:
        return results

    if buffer is not None:
        missing = [site.hook_name for site in todo if site.hook_name not in buffer.activations]
        if missing:
            raise SAEError(f"the given buffer has no activations for {', '.join(missing)}")
        _train_sites(model, todo, out_dir, config, buffer, results, harvest_seconds=0.0, threads=threads)
        return results
    spill_dir = out_dir / _SPILL_DIR
    estimate = buffer_gib(config.n_tokens, [site.width(model) for site in todo])
    if estimate > config.max_buffer_gib:
        check_disk_room(out_dir, estimate)
    shutil.rmtree(spill_dir, ignore_errors=True)  # a killed run's files
    started = time.perf_counter()
    batches, _ = corpus_batches(model.tokenizer, config.languages, config.split, config.n_tokens,
                                max_length=config.max_length, batch_size=config.text_batch_size,
                                exclude_bos=config.exclude_bos, qa_share=config.qa_share,
                                prompt_format=prompt_format(model))
    buffer = harvest_buffer(model, batches, todo, exclude_bos=config.exclude_bos, max_gib=config.max_buffer_gib,
                            spill_dir=spill_dir, progress=progress, description=f"harvest {len(todo)} site(s)")
    try:
        _train_sites(model, todo, out_dir, config, buffer, results, harvest_seconds=time.perf_counter() - started,
                     threads=threads)
    finally:
        buffer.release()
    return results


def _train_sites(model: Model, todo: list[Site], out_dir: Path, config: SAETrainConfig, buffer: ActivationBuffer,
                 results: dict[str, TrainedSite], *, harvest_seconds: float, threads: int | None) -> None:
    """Train, save and record the SAE of each site of ``todo`` on ``buffer`` (into ``results``)."""
    meta = model_metadata(model)
    token_counts = {group: int((buffer.labels == i).sum()) for i, group in enumerate(buffer.groups)}

    for site in todo:
        data = buffer.activations[site.hook_name]
        if buffer.spill_dir is not None and data.numel() * 4 / 2**30 <= config.max_buffer_gib:
            data = data.clone()  # one site in memory at a time: shuffled minibatches read RAM, not the disk
        started = time.perf_counter()
        with _torch_threads(threads):
            trained, trainer = fit_sae(data, config, site.hook_name, str(meta.get("name")))
        train_seconds = time.perf_counter() - started
        directory = out_dir / site.hook_name
        _save_inference_sae(trained, directory, trainer)
        sae = load_sae(directory, model)
        sample = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(1))[:8192]]
        with torch.inference_mode():
            latents = sae.encode(sample)
            fit = reconstruction_metrics(sample, sae.decode(latents), latents)
        record = {
            "site": site.hook_name, "architecture": config.architecture, "d_in": int(data.shape[-1]),
            "d_sae": config.width(int(data.shape[-1])), "tokens": buffer.n_tokens, "tokens_per_language": token_counts,
            "training_samples": trainer.n_training_samples, "steps": trainer.n_training_steps,
            "epochs": trainer.n_training_samples / buffer.n_tokens,
            "harvest_seconds_shared": round(harvest_seconds, 2), "train_seconds": round(train_seconds, 2),
            "train_threads": torch.get_num_threads() if threads is None else threads,
            "buffer_gib_all_sites": round(buffer.nbytes() / 2**30, 3), "buffer_on_disk": buffer.spill_dir is not None,
            "train_fit": {key: fit[key] for key in ("fvu", "l0", "dead_share")},
            "sae_lens_l0": trained.cfg.metadata.l0, "config": config.to_dict(), "model": meta,
            "sae_lens_version": _version("sae-lens"), "torch_version": torch.__version__,
        }
        atomic_write_json(directory / TRAINING_FILE, record)
        results[site.hook_name] = TrainedSite(site, sae, directory, record, reused=False)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
