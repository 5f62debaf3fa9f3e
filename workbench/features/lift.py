"""Causal logit-mass lift of SAE features: add ``a * natural_j * d_j`` at the prompt-final position
(:func:`measure_lift`), or remove the feature's own contribution ``z_j(h) d_j`` at every prompt position
(:func:`measure_ablation_lift`, how English-promoting features are scored for FOXP2's negative term).

For each (feature, scale) the prompts are run with the feature's decoder vector added at the SAE's site at each
prompt's last token, and ``M_tgt - M_en`` of the next-token distribution there is compared with the unsteered
value. Many (feature, scale) combinations share a forward pass: every row of a batch is one (prompt, feature,
scale) with its own added vector, and logits are computed at one position per row only.

On the ``hf`` backend the prompts' prefixes (every token but the last, left-padded) run once with a KV cache; each
row then costs a single-token forward of the prompt-final token, the only position the edit touches (the edit
cannot change earlier positions). Other backends run every row's whole prompt (``use_cache=False`` forces this
path everywhere; both give the same numbers).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench.backends import Model, can_prefill, device_of, position_logits, unembed
from workbench.evaluation.mass import language_mass
from workbench.features.scores import FeatureError
from workbench.features.steer import decoder_vectors
from workbench.saes.io import check_sae_fits


class _PromptRunner:
    """Final-position logits of a fixed set of prompts with a per-row vector added at one hook there."""

    def __init__(self, model: Model, hook_name: str, prompts: Sequence[str], max_length: int, use_cache: bool):
        self.model, self.hook_name = model, hook_name
        self.device = device_of(model)
        self.cached = use_cache and can_prefill(model)
        side = "left" if self.cached else "right"
        encoded = model.tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=True,
                                  max_length=max_length, padding_side=side)
        self.tokens, self.mask = encoded["input_ids"], encoded["attention_mask"]
        self.n_prompts = self.tokens.shape[0]
        if self.cached:
            with torch.inference_mode():
                self.cache = model.prefill(self.tokens[:, :-1].to(self.device), self.mask[:, :-1].to(self.device))
            self.final_positions = self.mask.sum(-1) - 1

    def logits(self, additions: Float[Tensor, "combo d"]) -> Float[Tensor, "combo prompt vocab"]:
        """Logits at each prompt's last token, for each added vector."""
        n_combos = additions.shape[0]
        if self.cached:
            rows_added = additions.repeat(self.n_prompts, 1)  # row = prompt * n_combos + combo
            logits = self._cached_logits(rows_added, n_combos)
            return einops.rearrange(logits, "(prompt combo) vocab -> combo prompt vocab", combo=n_combos)
        rows_added = additions.repeat_interleave(self.n_prompts, dim=0)  # row = combo * n_prompts + prompt
        logits = self._full_logits(self.tokens.repeat(n_combos, 1), self.mask.repeat(n_combos, 1), rows_added)
        return einops.rearrange(logits, "(combo prompt) vocab -> combo prompt vocab", combo=n_combos)

    def _cached_logits(self, rows_added: Tensor, repeats: int) -> Tensor:
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(repeats)
        mask = torch.cat([self.mask[:, :-1].repeat_interleave(repeats, dim=0),
                          torch.ones(self.n_prompts * repeats, 1, dtype=self.mask.dtype)], dim=1)

        def add(activation: Tensor, hook: Any) -> Tensor:
            return activation + rows_added.to(activation).unsqueeze(1)

        with torch.inference_mode(), self.model.hooks(fwd_hooks=[(self.hook_name, add)]):
            hidden = self.model.extend(
                cache, self.tokens[:, -1:].repeat_interleave(repeats, dim=0).to(self.device), mask.to(self.device),
                self.final_positions.repeat_interleave(repeats).unsqueeze(-1).to(self.device))[:, -1]
            return unembed(self.model, hidden).float().cpu()

    def _full_logits(self, tokens: Int[Tensor, "row pos"], mask: Int[Tensor, "row pos"],
                     additions: Float[Tensor, "row d"]) -> Float[Tensor, "row vocab"]:
        final = mask.sum(-1) - 1
        rows = torch.arange(tokens.shape[0])

        def add_at_final(activation: Tensor, hook: Any) -> Tensor:
            edited = activation.clone()
            edited[rows, final] = edited[rows, final] + additions.to(activation)
            return edited

        at_final = torch.zeros_like(mask, dtype=torch.bool)
        at_final[rows, final] = True
        with torch.inference_mode(), self.model.hooks(fwd_hooks=[(self.hook_name, add_at_final)]):
            return position_logits(self.model, tokens, mask, at_final, lambda logits, _: logits.float().cpu())


def prompt_mass_gap(model: Model, hook_name: str, prompts: Sequence[str], masks: Bool[Tensor, "2 vocab"],
                    additions: Float[Tensor, "combo d"], *, max_rows: int = 64, max_length: int = 64,
                    use_cache: bool = True, progress: bool = False) -> Float[Tensor, "combo prompt"]:
    """``M_tgt - M_en`` at each prompt's last token with each added vector (``masks`` rows: target, English)."""
    runner = _PromptRunner(model, hook_name, prompts, max_length, use_cache)
    budget = max_rows * 8 if runner.cached else max_rows  # a cached row is one token, not a whole prompt
    per_batch = max(1, budget // runner.n_prompts)
    gaps = []
    for start in tqdm(range(0, additions.shape[0], per_batch), desc="lift", disable=not progress, unit="batch"):
        mass = language_mass(runner.logits(additions[start:start + per_batch]), masks)
        gaps.append(mass[..., 0] - mass[..., 1])
    return torch.cat(gaps)


def measure_lift(model: Model, sae: Any, features: Sequence[int], natural: Float[Tensor, " feature"],
                 prompts: Sequence[str], masks: Bool[Tensor, "2 vocab"], scales: Sequence[float], *,
                 max_length: int = 64, max_rows: int = 64, use_cache: bool = True, progress: bool = True
                 ) -> tuple[Float[Tensor, "feature scale"], Float[Tensor, " prompt"]]:
    """``dM(a)`` per feature and scale (mean over prompts, unsteered value subtracted) and the unsteered gap.

    ``natural[i]`` is the natural activation of ``features[i]``; the vector added is
    ``scale * natural[i] * d_j``.
    """
    if not prompts:
        raise FeatureError("no prompts to measure lift on")
    if len(natural) != len(features):
        raise FeatureError(f"{len(features)} features but {len(natural)} natural activations")
    site = check_sae_fits(sae, model)
    width = int(sae.cfg.d_in)
    options = {"max_rows": max_rows, "max_length": max_length, "use_cache": use_cache}
    base = prompt_mass_gap(model, site.hook_name, prompts, masks, torch.zeros(1, width), **options)[0]
    if not features:
        return torch.zeros(0, len(scales)), base
    directions = decoder_vectors(sae, features).float()
    scale_tensor = torch.tensor(list(scales), dtype=torch.float32)
    additions = directions.unsqueeze(1) * natural.float().view(-1, 1, 1) * scale_tensor.view(1, -1, 1)
    flat = einops.rearrange(additions, "feature scale d -> (feature scale) d")
    gaps = prompt_mass_gap(model, site.hook_name, prompts, masks, flat, progress=progress, **options)
    delta = einops.rearrange((gaps - base.unsqueeze(0)).mean(-1), "(feature scale) -> feature scale",
                             scale=len(scales))
    return delta, base


def measure_ablation_lift(model: Model, sae: Any, features: Sequence[int], prompts: Sequence[str],
                          masks: Bool[Tensor, "2 vocab"], *, max_length: int = 64, max_rows: int = 64,
                          progress: bool = True) -> tuple[Float[Tensor, " feature"], Float[Tensor, " prompt"]]:
    """What removing each feature does: the change of ``M_tgt - M_en`` at each prompt's last token (mean over
    prompts) when ``z_j(h) d_j`` is subtracted at every prompt position but BOS (the SAE's error term kept), and
    the unablated gap per prompt.

    This is the edit FOXP2's negative term makes, so it scores English-promoting features where they act (adding
    an English feature on English prompts, where English mass is already saturated, moves almost nothing). A
    feature that never fires on the prompts scores 0.
    """
    if not prompts:
        raise FeatureError("no prompts to measure the ablation lift on")
    site = check_sae_fits(sae, model)
    encoded = model.tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=True,
                              max_length=max_length, padding_side="right")
    tokens, mask = encoded["input_ids"], encoded["attention_mask"]
    n_prompts = tokens.shape[0]
    bos = model.tokenizer.bos_token_id
    editable = mask.bool() & (tokens != bos if bos is not None else torch.ones_like(mask, dtype=torch.bool))
    at_final = torch.zeros_like(mask, dtype=torch.bool)
    at_final[torch.arange(n_prompts), mask.sum(-1) - 1] = True

    def gap(rows: int, hooks: list[Any]) -> Tensor:
        with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
            logits = position_logits(model, tokens.repeat(rows, 1), mask.repeat(rows, 1), at_final.repeat(rows, 1),
                                     lambda chunk, _: chunk.float().cpu())
        mass = language_mass(logits, masks)
        return mass[..., 0] - mass[..., 1]

    base = gap(1, [])
    if not features:
        return torch.zeros(0), base
    index = torch.as_tensor(list(features), dtype=torch.long)
    decoder = decoder_vectors(sae, index).float()
    per_batch = max(1, max_rows // n_prompts)
    lifts = []
    for start in tqdm(range(0, len(index), per_batch), desc="ablation lift", disable=not progress, unit="batch"):
        chunk = index[start:start + per_batch]
        row_features = chunk.repeat_interleave(n_prompts)  # row = feature * n_prompts + prompt
        row_decoder = decoder[start:start + len(chunk)].repeat_interleave(n_prompts, dim=0)
        row_editable = editable.repeat(len(chunk), 1)

        def ablate(activation: Tensor, hook: Any, row_features: Tensor = row_features,
                   row_decoder: Tensor = row_decoder, row_editable: Tensor = row_editable) -> Tensor:
            latents = sae.encode(activation.to(sae.dtype))
            chosen = latents.gather(-1, row_features.to(latents.device).view(-1, 1, 1).expand(
                -1, latents.shape[1], 1)).float()
            removal = chosen * row_decoder.to(chosen.device).unsqueeze(1) * row_editable.to(chosen.device).unsqueeze(-1)
            return activation - removal.to(activation)

        ablated = gap(len(chunk), [(site.hook_name, ablate)])
        lifts.append(einops.rearrange(ablated, "(feature prompt) -> feature prompt", prompt=n_prompts)
                     - base.unsqueeze(0))
    return torch.cat(lifts).mean(-1), base
