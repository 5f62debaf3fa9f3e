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

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from workbench.backends import Model, final_hidden_states
from workbench.errors import WorkbenchError
from workbench.interventions import Steer, steering
from workbench.readouts import length_sorted_batches

__all__ = ["LoraTrainConfig", "PooledClassifier", "attach_lora", "classify", "effective_weight",
           "LinearHead", "fit_linear_head", "train_classifier"]

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
    linear_probe_init: bool = True
    """Start the head from a logistic regression on the frozen model's pooled features of the training rows, then
    fine-tune (LP-FT, Kumar et al. 2022), so the steps are not spent on fitting a random head (at 60 steps from a
    random head, English accuracy stayed at the majority-class share)."""
    head_inverse_regularisations: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    """The linear head's C grid. Dev picks the smallest C whose English dev accuracy is within one standard error
    of the best (the one-standard-error rule): on the module task dev accuracy is flat over the grid (0.55-0.59)
    while C >= 0.1 fits the training rows perfectly (loss < 0.11), which leaves the adapters no gradient."""


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
        return self.head(self.pooled(tokens, mask))

    def pooled(self, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch d"]:
        """The features the head reads."""
        hidden = final_hidden_states(self.model, tokens, mask)
        bos = self.model.tokenizer.bos_token_id
        weights = (mask.bool() & (tokens != bos)).float() if bos is not None else mask.float()
        weights = weights.to(hidden.device)
        return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1)


def _encode(tokenizer, texts: Sequence[str], max_length: int) -> tuple[Tensor, Tensor]:
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right", truncation=True,
                        max_length=max_length)
    return encoded["input_ids"], encoded["attention_mask"]


@dataclass(frozen=True)
class LinearHead:
    """The head every LoRA run of a comparison starts from, and how dev chose it."""

    head: nn.Linear
    """Weights for :class:`PooledClassifier`'s head."""
    inverse_regularisation: float
    """The chosen C."""
    dev_accuracy: dict[float, float]
    """English dev accuracy at every C of the grid."""


def _logistic_head(features: np.ndarray, targets: np.ndarray, n_classes: int, inverse_regularisation: float
                   ) -> tuple[Tensor, Tensor]:
    """A multinomial logistic regression as (weight, bias) of ``n_classes`` logits (absent classes: bias -1e4)."""
    from sklearn.linear_model import LogisticRegression

    present = sorted(set(targets.tolist()))
    if len(present) < 2:
        raise AdapterError(f"a linear head needs at least two classes among the labels; got {present}")
    regression = LogisticRegression(C=inverse_regularisation, max_iter=3000).fit(features, targets)
    coefficients = torch.as_tensor(regression.coef_, dtype=torch.float32)
    intercepts = torch.as_tensor(regression.intercept_, dtype=torch.float32)
    if len(present) == 2:  # sklearn returns one row for two classes: split it as two opposite logits
        coefficients = torch.cat([-coefficients, coefficients]) / 2
        intercepts = torch.cat([-intercepts, intercepts]) / 2
    weight, bias = torch.zeros(n_classes, features.shape[1]), torch.full((n_classes,), -1e4)
    weight[present], bias[present] = coefficients, intercepts
    return weight, bias


def fit_linear_head(model: Model, texts: Sequence[str], labels: Sequence[str], dev_texts: Sequence[str],
                    dev_labels: Sequence[str], classes: Sequence[str], config: LoraTrainConfig = LoraTrainConfig(),
                    *, progress: bool = True) -> LinearHead:
    """A logistic regression on ``model``'s pooled features of ``texts``, as the head of a :class:`PooledClassifier`,
    its C chosen on the dev rows by the one-standard-error rule. Fit it once on the base model and pass it to
    every :func:`train_classifier` of a comparison: the adapters start as the identity, so every run starts from
    the same classifier."""
    classifier, batch_size = PooledClassifier(model, classes), 16

    def pooled(rows: Sequence[str], description: str) -> np.ndarray:
        batches = length_sorted_batches(model.tokenizer, rows, batch_size=batch_size, max_length=config.max_length)
        features = torch.empty(len(rows), model.cfg.d_model)
        with torch.inference_mode():
            for indices, tokens, mask in tqdm(batches, desc=description, disable=not progress, unit="batch"):
                features[indices] = classifier.pooled(tokens, mask).float().cpu()
        return features.numpy()

    features, dev_features = pooled(texts, "linear head [train]"), pooled(dev_texts, "linear head [dev]")
    targets = np.asarray([classifier.classes.index(label) for label in labels])
    dev_targets = np.asarray([classifier.classes.index(label) for label in dev_labels])
    heads, accuracy = {}, {}
    for value in config.head_inverse_regularisations:
        weight, bias = heads[value] = _logistic_head(features, targets, len(classes), value)
        accuracy[value] = float(((dev_features @ weight.numpy().T + bias.numpy()).argmax(-1) == dev_targets).mean())
    best = max(accuracy.values())
    error = float(np.sqrt(best * (1 - best) / len(dev_targets)))
    chosen = min(value for value, score in accuracy.items() if score >= best - error)
    with torch.no_grad():
        classifier.head.weight.copy_(heads[chosen][0])
        classifier.head.bias.copy_(heads[chosen][1])
    return LinearHead(classifier.head, chosen, accuracy)


def train_classifier(model: Model, texts: Sequence[str], labels: Sequence[str], classes: Sequence[str],
                     config: LoraTrainConfig = LoraTrainConfig(), *, head: LinearHead | None = None,
                     progress: bool = True) -> PooledClassifier:
    """Train the head and every trainable parameter of ``model`` (its adapters) on ``texts`` with cross-entropy.
    The head starts as a copy of ``head`` (:func:`fit_linear_head`), else random."""
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
    if head is not None:
        classifier.head.load_state_dict(head.head.state_dict())
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
    predictions = [""] * len(texts)
    batches = length_sorted_batches(classifier.model.tokenizer, texts, batch_size=batch_size, max_length=max_length)
    with steering(classifier.model, interventions), torch.inference_mode():
        for indices, tokens, mask in batches:
            for index, label in zip(indices, classifier(tokens, mask).argmax(-1).tolist(), strict=True):
                predictions[index] = classifier.classes[label]
    return predictions
