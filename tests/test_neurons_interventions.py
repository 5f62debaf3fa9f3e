"""Neuron interventions on a tiny gated HookedTransformer: the gated-MLP algebra against manual computations."""

import pytest
import torch
from conftest import make_tiny_cfg
from transformer_lens import HookedTransformer

from workbench.interventions import InterventionError, PositionRule, hooks_for, steering
from workbench.neurons.interventions import (
    BoostGate,
    ClasRescale,
    Deactivate,
    NeuronIntervention,
    SetGate,
    deactivate,
    random_like,
    set_gate,
)
from workbench.neurons.masks import NeuronError

TOKENS = torch.tensor([[1, 5, 9, 13, 2, 7, 30, 11], [1, 40, 41, 3, 8, 12, 6, 4]])
POST, UP = "blocks.1.mlp.hook_post", "blocks.1.mlp.hook_pre_linear"
UNITS = torch.tensor([0, 3, 17, 31])


def run(model, interventions=(), record=POST):
    """Logits and the (edited) activation at ``record`` with ``interventions`` applied."""
    seen = {}

    def keep(activation, hook):
        seen["value"] = activation.detach().clone()

    hooks = [*hooks_for(model, interventions), (record, keep)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(TOKENS)
    return logits, seen["value"]


def manual(model, replace):
    """Logits when hook_post of layer 1 is replaced by ``replace(post, up)`` from the unedited forward."""
    _, cache = model.run_with_cache(TOKENS, names_filter=[POST, UP])
    edited = replace(cache[POST].clone(), cache[UP])
    with torch.no_grad():
        return model.run_with_hooks(TOKENS, fwd_hooks=[(POST, lambda activation, hook: edited)]), edited


def test_set_gate_equals_value_times_up(tiny_model):
    values = torch.tensor([0.5, -0.1, 2.0, 0.0])

    def replace(post, up):
        post[..., UNITS] = values * up[..., UNITS]
        return post

    expected_logits, expected_post = manual(tiny_model, replace)
    logits, post = run(tiny_model, [NeuronIntervention(1, SetGate(UNITS, values))])
    torch.testing.assert_close(post, expected_post)
    torch.testing.assert_close(logits, expected_logits)
    assert (post[..., 17] != 0).all() and (post[..., 31] == 0).all()


def test_boost_and_deactivate_and_partial_strength(tiny_model):
    _, cache = tiny_model.run_with_cache(TOKENS, names_filter=[POST, UP])
    base, up = cache[POST], cache[UP]
    amounts = torch.tensor([1.0, 2.0, -1.0, 0.5])
    _, boosted = run(tiny_model, [NeuronIntervention(1, BoostGate(UNITS, amounts, strength=0.5))])
    torch.testing.assert_close(boosted[..., UNITS], base[..., UNITS] + 0.5 * amounts * up[..., UNITS])
    _, zeroed = run(tiny_model, [NeuronIntervention(1, Deactivate(UNITS))])
    assert (zeroed[..., UNITS] == 0).all()
    others = torch.ones(32, dtype=torch.bool)
    others[UNITS] = False
    torch.testing.assert_close(zeroed[..., others], base[..., others])
    _, halfway = run(tiny_model, [NeuronIntervention(1, SetGate(UNITS, torch.zeros(4), strength=0.5))])
    torch.testing.assert_close(halfway[..., UNITS], 0.5 * base[..., UNITS])


def test_clas_rescale_formula(tiny_model):
    partial = torch.zeros(32, dtype=torch.bool)
    specific = torch.zeros(32, dtype=torch.bool)
    partial[[1, 2]] = True
    specific[[2, 5]] = True

    def replace(post, up):
        h1 = post * (1 + 0.4 * partial.float())
        h2 = h1 * (1 - 0.2 * specific.float())
        return (1 - 1.5) * post + 1.5 * h2

    expected_logits, expected_post = manual(tiny_model, replace)
    logits, post = run(tiny_model, [NeuronIntervention(1, ClasRescale(partial, specific, strength=1.5))])
    torch.testing.assert_close(post, expected_post)
    torch.testing.assert_close(logits, expected_logits)


@pytest.mark.parametrize("edit", [
    SetGate(UNITS, torch.tensor([3.0, 3.0, 3.0, 3.0]), strength=0.0),
    BoostGate(UNITS, torch.ones(4), strength=0.0),
    Deactivate(UNITS, strength=0.0),
    ClasRescale(torch.ones(32, dtype=torch.bool), torch.ones(32, dtype=torch.bool), strength=0.0),
], ids=["set", "boost", "deactivate", "clas"])
def test_strength_zero_is_exactly_the_identity(tiny_model, edit):
    base_logits, _ = run(tiny_model)
    logits, _ = run(tiny_model, [NeuronIntervention(1, edit)])
    assert torch.equal(logits, base_logits)


def test_position_rule_edits_only_the_prompt_final_position(tiny_model):
    _, base = run(tiny_model)
    rule = PositionRule.parse("final")
    _, post = run(tiny_model, [NeuronIntervention(1, SetGate(UNITS, torch.full((4,), 2.0)), rule)])
    assert torch.equal(post[:, :-1], base[:, :-1])
    assert not torch.equal(post[:, -1], base[:, -1])


def test_mask_builders_and_random_control(tiny_model):
    selected = torch.zeros(2, 32, dtype=torch.bool)
    selected[0, [1, 4]] = True
    selected[1, [7]] = True
    values = torch.full((2, 32), 0.25)
    interventions = set_gate(selected, values)
    assert [i.layer for i in interventions] == [0, 1] and interventions[0].edit.units.tolist() == [1, 4]
    assert len(hooks_for(tiny_model, interventions)) == 4  # a capture and an edit per layer
    assert len(hooks_for(tiny_model, deactivate(selected))) == 2  # zeroing needs no capture
    control = random_like(selected, generator=torch.Generator().manual_seed(0))
    assert control.sum(-1).tolist() == [2, 1] and not (control & selected).any()
    with steering(tiny_model, interventions):
        steered = tiny_model(TOKENS)
    assert not torch.allclose(steered, tiny_model(TOKENS))


def test_errors_name_the_problem(tiny_model):
    with pytest.raises(InterventionError, match=r"0\.\.31"):
        NeuronIntervention(1, Deactivate(torch.tensor([32]))).hooks(tiny_model)
    with pytest.raises(InterventionError, match="3 units but 2 values"):
        SetGate(torch.tensor([0, 1, 2]), torch.zeros(2))
    with pytest.raises(InterventionError, match="width 8"):
        NeuronIntervention(0, ClasRescale(torch.zeros(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool))
                           ).hooks(tiny_model)
    torch.manual_seed(0)
    ungated = HookedTransformer(make_tiny_cfg(gated_mlp=False)).eval()
    with pytest.raises(NeuronError, match="no gated MLP"):
        NeuronIntervention(0, SetGate(UNITS, torch.zeros(4))).hooks(ungated)
    assert len(NeuronIntervention(0, Deactivate(UNITS)).hooks(ungated)) == 1  # zeroing works on any MLP
