"""LoRA fine-tuning with a classification head, and masked LoRA restricted to a set of MLP neurons (peft).

Masked LoRA (Mondal et al.): for a gated MLP, neuron ``i`` of a layer owns row ``i`` of ``gate_proj`` and
``up_proj`` and column ``i`` of ``down_proj``. Their LoRA updates are ``B @ A``, so masking rows of ``lora_B``
(gate, up) and columns of ``lora_A`` (down) with a parametrization (``weight * mask``) leaves every other neuron's
effective weights exactly the base model's, before and after any number of optimiser steps.

The adapters are injected into a copy of the HF model *before* it is wrapped in hook points
(:func:`workbench.backends.adapted_copy`), so ``hook_pre`` / ``hook_post`` see the adapted projections and
test-time interventions compose with the adaptation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from workbench.backends import Model, final_hidden_states
from workbench.errors import WorkbenchError
from workbench.interventions import Steer, steering

__all__ = ["LoraTrainConfig", "PooledClassifier", "attach_lora", "classify", "effective_weight",
           "train_classifier"]

ADAPTER = "default"
MLP_TARGETS: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")


class AdapterError(WorkbenchError):
    """A LoRA configuration or neuron mask that does not fit the model."""


@dataclass(frozen=True)
class LoraTrainConfig:
    """LoRA and its training on English rows."""

    rank: int = 8
    """LoRA rank r."""
    alpha: float = 16.0
    """LoRA scale numerator (the update is ``alpha / r * B @ A``)."""
    targets: tuple[str, ...] = MLP_TARGETS
    """Projections adapted in every layer (add ``q_proj`` ... to adapt attention too; a neuron mask applies to the
    MLP projections only)."""
    steps: int = 200
    """Optimiser steps."""
    batch_size: int = 8
    """Texts per step."""
    learning_rate: float = 5e-4
    """AdamW learning rate (adapters and head)."""
    max_length: int = 96
    """Tokens read per text."""
    seed: int = 0
    """Seed of the head's initialisation and of the batch order."""


class _Mask(nn.Module):
    """Parametrization ``weight * mask`` (the mask broadcasts over rows or columns)."""

    def __init__(self, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


def attach_lora(hf_model: nn.Module, config: LoraTrainConfig = LoraTrainConfig(),
                neurons: Bool[Tensor, "layer neuron"] | None = None) -> nn.Module:
    """Inject LoRA adapters into ``hf_model`` (in place; only adapter weights stay trainable); with ``neurons``,
    the MLP adapters can change only those neurons."""
    from peft import LoraConfig, inject_adapter_in_model

    layers = hf_model.model.layers
    if neurons is not None and tuple(neurons.shape) != (len(layers), hf_model.config.intermediate_size):
        raise AdapterError(f"the neuron mask has shape {tuple(neurons.shape)} but the model has "
                           f"{len(layers)} layers of {hf_model.config.intermediate_size} neurons")
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules=list(config.targets))
    inject_adapter_in_model(lora, hf_model)
    for name, parameter in hf_model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    if neurons is not None:
        for layer, keep in zip(layers, neurons.float(), strict=True):
            for name in ("gate_proj", "up_proj"):
                if name in config.targets:
                    parametrize.register_parametrization(getattr(layer.mlp, name).lora_B[ADAPTER], "weight",
                                                         _Mask(keep[:, None]))
            if "down_proj" in config.targets:
                parametrize.register_parametrization(layer.mlp.down_proj.lora_A[ADAPTER], "weight",
                                                     _Mask(keep[None, :]))
    return hf_model


def effective_weight(module: nn.Module) -> Float[Tensor, "out inp"]:
    """A LoRA-adapted linear layer's weight as the forward pass uses it: base weight plus the (masked) update."""
    return module.get_base_layer().weight + module.get_delta_weight(ADAPTER)


class PooledClassifier(nn.Module):
    """A linear head on the mean (over non-BOS, non-padding tokens) of the final-norm residual stream."""

    def __init__(self, model: Model, classes: Sequence[str]):
        super().__init__()
        self.model = model
        self.classes = tuple(classes)
        self.head = nn.Linear(model.cfg.d_model, len(classes))

    def forward(self, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch cls"]:
        hidden = final_hidden_states(self.model, tokens, mask)
        bos = self.model.tokenizer.bos_token_id
        weights = (mask.bool() & (tokens != bos)).float() if bos is not None else mask.float()
        weights = weights.to(hidden.device)
        pooled = (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1)
        return self.head(pooled)


def _encode(tokenizer, texts: Sequence[str], max_length: int) -> tuple[Tensor, Tensor]:
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right", truncation=True,
                        max_length=max_length)
    return encoded["input_ids"], encoded["attention_mask"]


def train_classifier(model: Model, texts: Sequence[str], labels: Sequence[str], classes: Sequence[str],
                     config: LoraTrainConfig = LoraTrainConfig(), *, progress: bool = True) -> PooledClassifier:
    """Train the head and every trainable parameter of ``model`` (its adapters) on ``texts`` with cross-entropy."""
    if not texts or len(texts) != len(labels):
        raise AdapterError(f"need one label per text and at least one text; got {len(texts)} texts, "
                           f"{len(labels)} labels")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise AdapterError(f"labels {unknown} are not among the classes {list(classes)}")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    classifier = PooledClassifier(model, classes)
    targets = torch.tensor([classifier.classes.index(label) for label in labels])
    trainable = [parameter for parameter in classifier.parameters() if parameter.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=config.learning_rate)
    classifier.train()
    bar = tqdm(range(config.steps), desc="lora", disable=not progress, unit="step")
    for _ in bar:
        batch = torch.randint(len(texts), (config.batch_size,), generator=generator)
        tokens, mask = _encode(model.tokenizer, [texts[i] for i in batch], config.max_length)
        loss = nn.functional.cross_entropy(classifier(tokens, mask), targets[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    classifier.eval()
    return classifier


def classify(classifier: PooledClassifier, texts: Sequence[str], *, interventions: Sequence[Steer] = (),
             batch_size: int = 16, max_length: int = 96) -> list[str]:
    """The predicted class of each text, with ``interventions`` active."""
    predictions: list[str] = []
    with steering(classifier.model, interventions), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens, mask = _encode(classifier.model.tokenizer, texts[start:start + batch_size], max_length)
            predictions += [classifier.classes[i] for i in classifier(tokens, mask).argmax(-1).tolist()]
    return predictions
