"""Pure neuron-method functions on synthetic tensors: planted neurons must be recovered."""

import pytest
import torch
import torch.nn.functional as F

from workbench.activations import ActivationStats, HarvestConfig, _finalise, _UnitAccumulator
from workbench.errors import WorkbenchError
from workbench.neurons.actprob import (
    UNFIRED_SCORE,
    ActProbConfig,
    activation_probability_90p,
    actprob_scores,
    exceedance_table,
)
from workbench.neurons.clas import (
    DEAD,
    PARTIAL,
    SHARED,
    SPECIFIC,
    ClasConfig,
    bridge_masks,
    categorize,
    category_shares,
    clas,
    select_bridge_layers,
)
from workbench.neurons.expertise import ExpertiseConfig, average_precision, expertise
from workbench.neurons.gating import gate_statistics
from workbench.neurons.lape import LapeConfig, lape, lape_entropy, lape_select
from workbench.neurons.masks import NeuronError, NeuronMask, jaccard
from workbench.sites import Site

CONFIG = HarvestConfig(histogram_kinds=("mlp_pre",), histogram_bins=256, histogram_max_abs=100.0)


def stats_from_samples(samples: dict[str, torch.Tensor]) -> dict[str, ActivationStats]:
    """Per-language ActivationStats of ``mlp_pre`` from samples of shape (token, layer, neuron)."""
    result = {}
    for code, values in samples.items():
        accumulators = {}
        for layer in range(values.shape[1]):
            accumulator = _UnitAccumulator(values.shape[2], CONFIG.bin_edges(), CONFIG)
            accumulator.update(values[:, layer])
            accumulators[(Site(layer, "mlp_pre"), code)] = accumulator
        result[code] = ActivationStats(sites=[Site(layer, "mlp_pre") for layer in range(values.shape[1])],
                                       groups=[code], config=CONFIG, tensors=_finalise(accumulators))
    return result


# ------------------------------------------------------------------------------------------------------ LAPE

def planted_probabilities(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    p = 0.2 + 0.3 * torch.rand(3, 100, 3, generator=generator)
    p[1, 7] = torch.tensor([0.97, 0.02, 0.02])   # language 0 only
    p[2, 40] = torch.tensor([0.01, 0.96, 0.01])  # language 1 only
    p[0, 3] = torch.tensor([0.95, 0.95, 0.01])   # languages 0 and 1
    p[0, 9] = torch.tensor([0.10, 0.001, 0.001])  # lowest entropy of all, but never above the filter
    return p


def test_lape_recovers_planted_neurons_and_assigns_languages_above_the_bar():
    mask, entropy, thresholds = lape_select(planted_probabilities(), LapeConfig(top_rate=0.01))
    assert thresholds["n_kept"] == 3  # 1% of 300 neurons
    assert mask.any(-1).sum() == 3
    assert mask[1, 7].tolist() == [True, False, False]
    assert mask[2, 40].tolist() == [False, True, False]
    assert mask[0, 3].tolist() == [True, True, False]
    # The entropy filter: the most peaked neuron is dropped because no language reaches the filter quantile.
    assert torch.isinf(entropy[0, 9]) and not mask[0, 9].any()
    assert thresholds["bar"] < 0.95


def test_lape_entropy_matches_the_definition():
    p = torch.tensor([[[0.5, 0.25, 0.25], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0]]])
    expected_first = -sum(q * torch.log(torch.tensor(q)) for q in (0.5, 0.25, 0.25))
    entropy = lape_entropy(p)
    torch.testing.assert_close(entropy[0, 0], expected_first)
    assert entropy[0, 1] == 0 and entropy[0, 2] == 0


def test_lape_config_validation_and_bad_probabilities():
    with pytest.raises(NeuronError, match="top_rate"):
        LapeConfig(top_rate=0.0)
    with pytest.raises(NeuronError, match=r"\[0, 1\]"):
        lape_select(torch.full((1, 4, 2), 1.5))


def test_lape_reads_frac_positive_of_mlp_pre_per_language():
    generator = torch.Generator().manual_seed(1)
    samples = {code: torch.randn(400, 2, 50, generator=generator) - 0.3 for code in ("en", "hi", "zh")}
    samples["hi"][:, 1, 11] = 2.0 + torch.rand(400, generator=generator)  # always on for Hindi
    samples["en"][:, 1, 11] = -2.0
    samples["zh"][:, 1, 11] = -2.0
    mask = lape(stats_from_samples(samples), ["en", "hi", "zh"], LapeConfig(top_rate=0.01))
    assert mask.of("hi")[1, 11] and not mask.of("en")[1, 11] and not mask.of("zh")[1, 11]
    assert mask.extra["activation_probability"][1, 11].tolist() == [0.0, 1.0, 0.0]


# ------------------------------------------------------------------------------------------------------ 90p

def test_ap90_recovers_a_planted_neuron_and_the_literal_score_is_point_one():
    generator = torch.Generator().manual_seed(2)
    samples = {code: torch.randn(2000, 2, 40, generator=generator) for code in ("en", "es", "hi")}
    samples["hi"][:, 0, 5] += 3.0  # Hindi's P90 is rarely reached by the others
    for code in ("en", "es"):  # silent in Hindi (P90 gate < 0) and even more silent elsewhere: not a Hindi neuron
        samples[code][:, 1, 7] -= 6.0
    samples["hi"][:, 1, 7] -= 3.0
    stats = stats_from_samples(samples)
    exceedance, thresholds = exceedance_table(stats, ["en", "es", "hi"], 0.9)
    diagonal = exceedance.diagonal(dim1=-2, dim2=-1)
    assert (diagonal - 0.1).abs().max() < 0.02  # the literal reference score: ~0.10 for every neuron
    assert thresholds[1, 7, 2] < 0 < thresholds[0, 5, 2]
    mask = activation_probability_90p(stats, ["en", "es", "hi"], ActProbConfig(top_rate=1 / 80))
    assert mask.per_language()["hi"] == 1 and mask.of("hi")[0, 5] and not mask.of("hi")[1, 7]
    assert mask.scores[0, 5, 2] > 0.09 and mask.scores[0, 5, 0] < 0  # English's P90 is exceeded by Hindi a lot
    assert mask.scores[1, 7, 2] == UNFIRED_SCORE


def test_ap90_scores_literal_table():
    exceedance = torch.tensor([[[[0.1, 0.0, 0.02], [0.5, 0.1, 0.3], [0.1, 0.1, 0.1]]]])
    scores = actprob_scores(exceedance, 0.9, "mean")
    torch.testing.assert_close(scores[0, 0], torch.tensor([0.1 - 0.01, 0.1 - 0.4, 0.0]))
    scores_max = actprob_scores(exceedance, 0.9, "max")
    torch.testing.assert_close(scores_max[0, 0], torch.tensor([0.1 - 0.02, 0.1 - 0.5, 0.0]))
    with pytest.raises(NeuronError, match="at least two"):
        actprob_scores(exceedance[..., :1, :1])


# ------------------------------------------------------------------------------------------------- act(gate)

def test_gate_statistics_match_sample_statistics_of_act_gate():
    generator = torch.Generator().manual_seed(3)
    gate = torch.randn(20000, 1, 6, generator=generator) * torch.tensor([0.3, 1.0, 2.0, 4.0, 1.0, 0.5]) \
        + torch.tensor([0.0, -0.5, 1.0, -2.0, 3.0, -1.0])
    values = gate_statistics(stats_from_samples({"hi": gate}), ["hi"], [0], "gelu_pytorch_tanh")
    act = F.gelu(gate[:, 0], approximate="tanh")
    torch.testing.assert_close(values["mean"][0, :, 0], act.mean(0), atol=0.01, rtol=0.02)
    torch.testing.assert_close(values["p90"][0, :, 0], act.quantile(0.9, dim=0), atol=0.01, rtol=0.05)
    torch.testing.assert_close(values["p10"][0, :, 0], act.quantile(0.1, dim=0), atol=0.01, rtol=0.05)
    assert (values["zero"] == 0).all()


# ------------------------------------------------------------------------------------------------------ CLAS

def test_categories_from_dataset_level_activity():
    active = torch.tensor([[[False, False, False], [False, True, False], [True, True, False], [True, True, True]]])
    assert categorize(active).tolist() == [[DEAD, SPECIFIC, PARTIAL, SHARED]]
    shares = category_shares(categorize(active))
    assert shares.tolist() == [[0.25, 0.25, 0.25, 0.25]]


def test_bridge_layers_follow_the_stated_rule():
    shares = torch.zeros(10, 4)
    shares[:, DEAD] = 0.5
    shares[4:7, PARTIAL] = 0.6
    shares[4:7, DEAD] = 0.1
    shares[8:, PARTIAL] = 0.9  # the highest peak lies in the excluded final layers
    shares[8:, DEAD] = 0.0
    assert select_bridge_layers(shares, width=3, exclude_last=2) == [4, 5, 6]
    assert select_bridge_layers(shares, width=2, exclude_last=0) == [8, 9]
    shares[0:2, PARTIAL], shares[0:2, DEAD] = 0.8, 0.0  # an embedding-side peak, excluded by exclude_first
    assert select_bridge_layers(shares, width=2, exclude_last=2) == [0, 1]
    assert select_bridge_layers(shares, width=2, exclude_last=2, exclude_first=2) == [4, 5]
    with pytest.raises(NeuronError, match="no window"):
        select_bridge_layers(shares, width=9, exclude_last=2)
    with pytest.raises(NeuronError, match="no window"):
        select_bridge_layers(shares, width=7, exclude_last=2, exclude_first=2)


def test_clas_recovers_planted_categories_and_intervention_masks():
    generator = torch.Generator().manual_seed(4)
    pooled = {code: -0.05 - 0.1 * torch.rand(30, 6, 8, generator=generator) for code in ("en", "hi", "zh")}
    pooled["hi"][:, 2, 1] = 0.5                      # Hindi-specific
    for code in ("en", "hi", "zh"):
        pooled[code][:, 2, 2] = 0.3                  # all-shared
    pooled["en"][:, 2, 3] = pooled["zh"][:, 2, 3] = 0.2  # partial-shared
    pooled["zh"][:10, 2, 4] = 0.4                    # active on only a third of the Chinese items: dead
    mask = clas(pooled, ["en", "hi", "zh"], ClasConfig(bridge_width=2, exclude_last=1))
    category = mask.extra["category"]
    assert category[2, :5].tolist() == [DEAD, SPECIFIC, SHARED, PARTIAL, DEAD]
    assert mask.of("hi")[2, 1] and mask.per_language() == {"en": 0, "hi": 1, "zh": 0}
    assert 2 in mask.config["bridge_layers"]
    sensitivity = mask.config["bridge_layers_by_item_fraction"]
    assert sensitivity["0.5"] == mask.config["bridge_layers"] and set(sensitivity) == {"0.1", "0.25", "0.5", "0.75",
                                                                                        "0.9"}
    partial, specific = bridge_masks(mask)
    assert partial[2, 3] and specific[2, 1] and partial.sum() == 1 and specific.sum() == 1
    _, only_source = bridge_masks(mask, layers=[2], specific="source", source="en")
    assert not only_source.any()


# ------------------------------------------------------------------------------------------------- expertise

def test_average_precision_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(5)
    scores = torch.randn(60, 7, generator=generator)
    scores[:, 4] = scores[:, 4].round()  # many ties
    scores[:, 5] = scores[:, 5].clamp_min(0.5)  # a block of exact ties at the bottom, as GELU's zeros
    scores[:, 6] = 0.0  # constant: AP is the positive rate, whatever the sample order
    labels = torch.rand(60, generator=generator) < 0.3
    ours = average_precision(scores, labels)
    for unit in range(7):
        expected = sklearn_metrics.average_precision_score(labels.numpy(), scores[:, unit].numpy())
        assert abs(float(ours[unit]) - expected) < 1e-6
    assert abs(float(ours[6]) - float(labels.float().mean())) < 1e-6


def test_expertise_keeps_top_and_bottom_experts():
    generator = torch.Generator().manual_seed(6)
    pooled = {code: torch.randn(40, 2, 30, generator=generator) for code in ("en", "es", "hi")}
    pooled["hi"][:, 1, 4] += 5.0  # fires for Hindi
    pooled["hi"][:, 0, 9] -= 5.0  # goes quiet for Hindi
    mask = expertise(pooled, ["en", "es", "hi"], ExpertiseConfig(top_n=1, bottom_n=1))
    assert mask.extra["top"][1, 4, 2] and mask.extra["bottom"][0, 9, 2]
    assert mask.per_language()["hi"] == 2
    assert mask.scores[1, 4, 2] == pytest.approx(1.0)
    with pytest.raises(NeuronError, match="at least two"):
        expertise({"hi": pooled["hi"]}, ["hi"])


# ------------------------------------------------------------------------------------------------------ masks

def make_mask() -> NeuronMask:
    mask = torch.zeros(3, 16, 2, dtype=torch.bool)
    mask[0, [1, 2], 0] = True
    mask[2, [2, 5, 6], 1] = True
    mask[0, 2, 1] = True
    return NeuronMask(mask=mask, languages=("en", "hi"), method="lape", config={"lape": {"top_rate": 0.01}},
                      scores=torch.rand(3, 16, 2), extra={"entropy": torch.rand(3, 16)})


def test_mask_counts_and_jaccard():
    mask = make_mask()
    assert mask.per_language() == {"en": 2, "hi": 4}
    assert mask.per_layer() == [2, 0, 3] and mask.n_selected == 5
    assert mask.per_layer_language() == {"en": [2, 0, 0], "hi": [1, 0, 3]}
    assert mask.language_jaccard()[0, 1] == pytest.approx(1 / 5)
    assert jaccard(mask.of("en"), mask.of("en")) == 1.0
    assert mask.units("hi")[2].tolist() == [2, 5, 6]


def test_mask_save_load_roundtrip(tmp_path):
    mask = make_mask()
    mask.save(tmp_path / "mask")
    loaded = NeuronMask.load(tmp_path / "mask")
    assert torch.equal(loaded.mask, mask.mask) and torch.equal(loaded.scores, mask.scores)
    assert torch.equal(loaded.extra["entropy"], mask.extra["entropy"])
    assert loaded.languages == mask.languages and loaded.method == "lape" and loaded.config == mask.config


def test_mask_errors_are_clear():
    with pytest.raises(WorkbenchError, match="Unknown language code 'xx'"):
        NeuronMask(mask=torch.zeros(1, 4, 1, dtype=torch.bool), languages=("xx",), method="lape")
    with pytest.raises(NeuronError, match="2 language columns but 1"):
        NeuronMask(mask=torch.zeros(1, 4, 2, dtype=torch.bool), languages=("en",), method="lape")
    with pytest.raises(NeuronError, match="not in this lape mask"):
        make_mask().of("zh")
    with pytest.raises(NeuronError, match="no neuron mask"):
        NeuronMask.load("/nonexistent/mask")
