"""The demo job: harvest English and target-language residuals, build DiffMean directions, steer, plot.

Writes to ``out_dir``: ``activations/`` (statistics), ``diffmean.safetensors`` (+ json), ``generations.json``
and ``diffmean_by_layer.html``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from workbench import corpus
from workbench.activations import ActivationStats, batch_texts, harvest
from workbench.artifacts import atomic_write_json, save_tensors
from workbench.models import load_model, model_metadata
from workbench.plots import layer_profile
from workbench.sites import sites_for
from workbench.steering import add_vector, generate


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo job."""

    targets: tuple[str, ...] = ("hi", "es")
    """Languages to steer towards (English is the source)."""
    n_rows: int = 200
    """Parallel discovery rows per language used for the DiffMean directions."""
    layer: int = 6
    """Layer whose ``hook_resid_post`` is steered."""
    strength: float = 1.0
    """Multiple of the raw (unnormalised) DiffMean vector added at every position."""
    n_prompts: int = 4
    """English eval-split prompts to generate from."""
    max_new_tokens: int = 32
    """Greedy tokens generated per prompt."""


def diffmean_by_layer(stats: ActivationStats, target: str, source: str = "en") -> torch.Tensor:
    """Raw DiffMean ``mean_target - mean_source`` of ``hook_resid_post`` per layer, shape (layer, d_model)."""
    means = stats.stack("mean", "resid_post", [target, source])
    return means[..., 0] - means[..., 1]


def run_demo(out_dir: str | Path, config: DemoConfig = DemoConfig(), model: Any = None) -> dict[str, Any]:
    out_dir = Path(out_dir)
    model = model or load_model(backend="hf")
    languages = ["en", *config.targets]
    rows = corpus.parallel(languages, split="discovery", n=config.n_rows)
    texts = {lang: [row.text[lang] for row in rows] for lang in languages}
    batches = batch_texts(model.tokenizer, texts, batch_size=16)
    stats = harvest(model, batches, sites_for(model, "resid_post"), total=len(batches),
                    description="harvest resid_post (en + targets)")
    stats.save(out_dir / "activations")

    directions = {target: diffmean_by_layer(stats, target) for target in config.targets}
    save_tensors({f"diffmean/{target}": tensor for target, tensor in directions.items()},
                 out_dir / "diffmean.safetensors")
    atomic_write_json(out_dir / "diffmean.json", {
        "method": "diffmean (raw: mean_target - mean_en of hook_resid_post, all non-BOS tokens)",
        "split": "discovery", "n_rows": len(rows), "model": model_metadata(model), "config": asdict(config),
    })

    english_norm = stats.stack("mean", "resid_post", ["en"])[..., 0].norm(dim=-1)
    profile = pd.DataFrame([
        {"layer": layer, "language": target, "relative_norm": float(vector.norm() / english_norm[layer])}
        for target, per_layer in directions.items() for layer, vector in enumerate(per_layer)
    ])
    figure = layer_profile(profile, value="relative_norm", title="How far each language sits from English",
                           y_title="‖mean(target) − mean(en)‖ / ‖mean(en)‖ at hook_resid_post")
    figure.write_html(out_dir / "diffmean_by_layer.html", include_plotlyjs="cdn")

    prompts = [f"Q: {p.prompt}\nA:" for p in corpus.prompts(split="eval", n=config.n_prompts)]
    site = f"blocks.{config.layer}.hook_resid_post"
    generations: dict[str, list[str]] = {"none": generate(model, prompts, max_new_tokens=config.max_new_tokens)}
    for target, per_layer in directions.items():
        hook = add_vector(model, site, per_layer[config.layer], config.strength)
        generations[target] = generate(model, prompts, hooks=[hook], max_new_tokens=config.max_new_tokens)
    result = {"prompts": prompts, "site": site, "strength": config.strength, "generations": generations}
    atomic_write_json(out_dir / "generations.json", result)
    return result
