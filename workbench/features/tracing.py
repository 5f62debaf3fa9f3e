"""Trace SAE features back to MLP neurons (METHODS section 3) and check the tracing causally.

Residual (``hook_resid_*``) and ``hook_mlp_out`` SAEs: feature ``j``'s pre-activation is linear in the site
activation, ``x @ E[:, j] + c_j`` (:func:`workbench.features.steer.encoder_directions`). MLP neuron ``n`` of a layer
``l' <= l`` writes ``act_n * W_out[n]`` into the residual stream directly; with a post-MLP RMSNorm (Gemma's sandwich
norm) it writes ``act_n * (g * W_out[n]) / r`` where ``g`` is the norm's gain and ``r`` the token's RMS of the raw
MLP output, so the neurons' terms still sum exactly to ``hook_mlp_out`` (minus the output-bias term). Its direct
contribution to the feature is therefore ``act_n / r * ((g * W_out[n]) . E[:, j])``; paths through later
attention/MLP blocks are not counted. ``mlp.hook_post`` SAEs: the decoder vector over ``d_mlp`` gives each neuron's
share directly: ``natural_j * d_j[n]``.

Contributions are aggregated over target-language tokens, by default weighted by the feature's activation
(``weighting="activation"``: the neuron's mean contribution where the feature fires), or uniformly. Each kept
feature's positive contributions are normalised to shares; the top neurons per feature are pooled into a compact
language-neuron set (weight = summed shares). :func:`verify_tracing` zeroes the traced neurons (``hook_post``, all
positions) and compares the drop of the feature's activation with zeroing as many random neurons of the same
layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.activations import TokenBatch
from workbench.backends import BackendError, Model, mlp_write_weights
from workbench.features.scores import FeatureError
from workbench.features.steer import decoder_vectors, encoder_directions
from workbench.interventions import Intervention, SetUnits, hooks_for
from workbench.saes.data import capture
from workbench.saes.io import check_sae_fits
from workbench.sites import Site


@dataclass(frozen=True)
class MLPWriter:
    """How one layer's MLP neurons write into the residual stream."""

    layer: int
    """Block index."""
    w_out: Float[Tensor, "d_mlp d_model"]
    """Down projection, one row per neuron."""
    bias: Float[Tensor, " d_model"] | None
    """Down-projection bias (None: none)."""
    gain: Float[Tensor, " d_model"] | None
    """Effective gain of a post-MLP RMSNorm (None: no post-norm)."""
    eps: float | None
    """That norm's epsilon (None: no post-norm)."""

    @property
    def writes(self) -> Float[Tensor, "d_mlp d_model"]:
        """Each neuron's write direction before the per-token 1/r: ``g * W_out[n]``."""
        return self.w_out if self.gain is None else self.w_out * self.gain

    def token_scale(self, post: Float[Tensor, "token d_mlp"]) -> Float[Tensor, "token 1"]:
        """``1 / r`` per token (ones without a post-norm)."""
        if self.eps is None:
            return torch.ones(post.shape[0], 1, dtype=post.dtype)
        raw = post @ self.w_out + (0 if self.bias is None else self.bias)
        return torch.rsqrt(raw.pow(2).mean(-1, keepdim=True) + self.eps)


def mlp_writer(model: Model, layer: int) -> MLPWriter:
    """The MLP write map of ``layer`` for the ``hf`` backend or a HookedTransformer."""
    try:
        weights = mlp_write_weights(model, layer)
    except BackendError as err:
        raise FeatureError(f"tracing cannot read layer {layer}'s MLP: {err}") from err
    return MLPWriter(layer, weights.w_out, weights.bias, weights.gain, weights.eps)


def traced_layers(site: Site) -> list[int]:
    """MLP layers whose neurons write directly into the site."""
    if site.kind == "resid_post":
        return list(range(site.layer + 1))
    if site.kind in ("resid_pre", "resid_mid"):
        return list(range(site.layer))
    if site.kind in ("mlp_out", "mlp_post"):
        return [site.layer]
    raise FeatureError(f"cannot trace features of a {site.kind} SAE to MLP neurons; use a residual, mlp_out or "
                       "mlp_post site")


def neuron_contributions(mean_scaled: Float[Tensor, "feature layer d_mlp"],
                         writes: Float[Tensor, "layer d_mlp d_model"], encoder: Float[Tensor, "d_model feature"]
                         ) -> Float[Tensor, "feature layer d_mlp"]:
    """Direct contributions ``mean(act_n / r) * ((g * W_out[n]) . E[:, j])`` per feature, layer and neuron."""
    return mean_scaled * torch.einsum("lnd,df->fln", writes, encoder)


def _relevance(contributions: Tensor, by_magnitude: bool) -> Tensor:
    return contributions.abs() if by_magnitude else contributions.clamp_min(0)


def compact_neuron_set(tracings: Sequence[tuple[Tensor, Sequence[int]]], *,
                       per_feature: int = 16, max_neurons: int = 256) -> list[dict[str, Any]]:
    """Pool each feature's top neurons into one ranked language-neuron set.

    ``tracings`` are (contributions of shape (feature, layer, d_mlp), layers) pairs, e.g. one per SAE site, whose
    feature and layer counts differ from site to site (pass absolute values for the decoder
    route of ``mlp.hook_post`` SAEs, whose signed decoder rows are the feature's neuron pattern). Each feature's
    positive contributions are normalised to shares summing to 1; its ``per_feature`` largest shares are added to
    their neurons' weights. Returns at most ``max_neurons`` rows ``{layer, index, weight, n_features}``, heaviest
    first.
    """
    pooled: dict[tuple[int, int], list[float]] = {}
    for contributions, layers in tracings:
        if contributions.shape[1] != len(layers):
            raise FeatureError(f"contributions cover {contributions.shape[1]} layers but {len(layers)} are named")
        positive = contributions.clamp_min(0).double()
        d_mlp = positive.shape[-1]
        for feature in range(positive.shape[0]):
            total = positive[feature].sum()
            if total <= 0:
                continue
            shares = (positive[feature] / total).flatten()
            top = shares.topk(min(per_feature, shares.numel()))
            for flat_index, share in zip(top.indices.tolist(), top.values.tolist(), strict=True):
                if share <= 0:
                    continue
                key = (int(layers[flat_index // d_mlp]), int(flat_index % d_mlp))
                entry = pooled.setdefault(key, [0.0, 0])
                entry[0] += share
                entry[1] += 1
    ranked = sorted(pooled.items(), key=lambda item: (-item[1][0], item[0]))[:max_neurons]
    return [{"layer": layer, "index": index, "weight": weight, "n_features": int(count)}
            for (layer, index), (weight, count) in ranked]


def top_neurons(contributions: Float[Tensor, "layer d_mlp"], layers: Sequence[int], n: int, *,
                by_magnitude: bool = False) -> list[tuple[int, int]]:
    """The ``n`` neurons with the largest positive (``by_magnitude``: absolute) contribution to one feature, as
    (layer, index)."""
    flat = _relevance(contributions, by_magnitude).flatten()
    top = flat.topk(min(n, flat.numel()))
    d_mlp = contributions.shape[-1]
    return [(int(layers[i // d_mlp]), int(i % d_mlp)) for i, v in zip(top.indices.tolist(), top.values.tolist(),
                                                                       strict=True) if v > 0]


@dataclass
class Tracing:
    """Per-feature neuron contributions of one SAE, aggregated over target tokens."""

    site: str
    features: list[int]
    layers: list[int]
    contributions: Float[Tensor, "feature layer d_mlp"]
    mean_activation: Float[Tensor, " feature"]
    method: str
    weighting: str


def trace_features(model: Model, sae: Any, features: Sequence[int], batches: Sequence[TokenBatch], *,
                   weighting: Literal["activation", "uniform"] = "activation", exclude_bos: bool = True,
                   progress: bool = True) -> Tracing:
    """Neuron contributions to ``features`` of ``sae`` over the usable tokens of ``batches`` (target text)."""
    if weighting not in ("activation", "uniform"):
        raise FeatureError(f"weighting must be 'activation' or 'uniform', got {weighting!r}")
    if not features:
        raise FeatureError("no features to trace")
    site = check_sae_fits(sae, model)
    layers = traced_layers(site)
    chosen = torch.as_tensor(list(features), dtype=torch.long)
    decoder_route = site.kind == "mlp_post"
    writers = [] if decoder_route else [mlp_writer(model, layer) for layer in layers]
    post_hooks = [] if decoder_route else [f"blocks.{layer}.mlp.hook_post" for layer in layers]
    d_mlp = model.cfg.d_mlp
    accumulated = torch.zeros(len(chosen), len(layers), d_mlp, dtype=torch.float64)
    weight_sum = torch.zeros(len(chosen), dtype=torch.float64)
    active_sum = torch.zeros(len(chosen), dtype=torch.float64)
    active_count = torch.zeros(len(chosen), dtype=torch.float64)
    for captured in capture(model, batches, [site.hook_name, *post_hooks], exclude_bos=exclude_bos,
                            progress=progress, description=f"trace {site.hook_name}", total=len(batches)):
        mask = captured.mask
        with torch.no_grad():
            latents = sae.encode(captured.activations[site.hook_name][mask].to(sae.dtype))[:, chosen].double()
        active_sum += latents.sum(0)
        active_count += (latents != 0).sum(0)
        weights = latents if weighting == "activation" else torch.ones_like(latents)
        weight_sum += weights.sum(0)
        for index, (name, writer) in enumerate(zip(post_hooks, writers, strict=True)):
            post = captured.activations[name][mask]
            scaled = (post * writer.token_scale(post)).double()
            accumulated[:, index] += weights.T @ scaled
    mean_activation = (active_sum / active_count.clamp_min(1)).float()
    if decoder_route:
        shares = decoder_vectors(sae, chosen).float()
        contributions = (mean_activation.unsqueeze(-1) * shares).unsqueeze(1)
    else:
        mean_scaled = (accumulated / weight_sum.clamp_min(1e-12).view(-1, 1, 1)).float()
        encoder, _ = encoder_directions(sae)
        writes = torch.stack([writer.writes for writer in writers])
        contributions = neuron_contributions(mean_scaled, writes, encoder[:, chosen].float())
    return Tracing(site.hook_name, [int(f) for f in chosen], layers, contributions, mean_activation,
                   "decoder" if decoder_route else "direct-attribution", weighting)


def _ablation_hooks(model: Model, neurons: Sequence[tuple[int, int]]) -> list[Any]:
    by_layer: dict[int, list[int]] = {}
    for layer, index in neurons:
        by_layer.setdefault(layer, []).append(index)
    interventions = [Intervention(f"blocks.{layer}.mlp.hook_post",
                                  SetUnits(torch.tensor(units), torch.zeros(len(units))))
                     for layer, units in sorted(by_layer.items())]
    return hooks_for(model, interventions)


def _mean_feature(model: Model, sae: Any, feature: int, batches: Sequence[TokenBatch], hooks: list[Any],
                  exclude_bos: bool) -> float:
    site = check_sae_fits(sae, model)
    total, count = 0.0, 0
    for captured in capture(model, batches, [site.hook_name], exclude_bos=exclude_bos, progress=False,
                            extra_hooks=hooks):
        with torch.no_grad():
            latents = sae.encode(captured.activations[site.hook_name][captured.mask].to(sae.dtype))[:, feature]
        total += float(latents.double().sum())
        count += int(latents.shape[0])
    return total / max(count, 1)


def random_neurons_like(neurons: Sequence[tuple[int, int]], d_mlp: int, generator: torch.Generator
                        ) -> list[tuple[int, int]]:
    """As many random neurons per layer as ``neurons`` has, avoiding the traced ones."""
    traced = set(neurons)
    result = []
    for layer in sorted({layer for layer, _ in neurons}):
        wanted = sum(1 for lay, _ in neurons if lay == layer)
        candidates = [i for i in torch.randperm(d_mlp, generator=generator).tolist() if (layer, i) not in traced]
        result += [(layer, i) for i in candidates[:wanted]]
    return result


def verify_tracing(model: Model, sae: Any, feature: int, neurons: Sequence[tuple[int, int]],
                   batches: Sequence[TokenBatch], *, n_random: int = 3, seed: int = 0, exclude_bos: bool = True
                   ) -> dict[str, Any]:
    """Mean drop of the feature's activation when the traced neurons are zeroed vs as many random neurons.

    ``ratio`` = |traced shift| / mean |random shift| (the shifts themselves are reported signed).
    """
    if not neurons:
        raise FeatureError(f"no traced neurons for feature {feature}")
    clean = _mean_feature(model, sae, feature, batches, [], exclude_bos)
    traced = clean - _mean_feature(model, sae, feature, batches, _ablation_hooks(model, neurons), exclude_bos)
    generator = torch.Generator().manual_seed(seed)
    random_shifts = []
    for _ in range(n_random):
        draw = random_neurons_like(neurons, model.cfg.d_mlp, generator)
        random_shifts.append(clean - _mean_feature(model, sae, feature, batches, _ablation_hooks(model, draw),
                                                   exclude_bos))
    random_mean = sum(abs(s) for s in random_shifts) / len(random_shifts)
    return {"feature": int(feature), "n_neurons": len(neurons), "clean_mean": clean, "traced_shift": traced,
            "random_shifts": random_shifts, "random_abs_shift_mean": random_mean,
            "ratio": abs(traced) / random_mean if random_mean > 0 else float("inf")}
