import pytest
import torch

from workbench.interventions import (
    AblateDirection,
    AddVector,
    Intervention,
    InterventionError,
    PositionalHook,
    PositionRule,
    Project,
    Rescale,
    SetComponent,
    SetUnits,
    hooks_for,
    mean_edit_norm,
    prompt_ends,
    steering,
)

D = 16


def _edits(strength: float) -> list:
    generator = torch.Generator().manual_seed(1)
    vector, basis = torch.randn(D, generator=generator), torch.randn(3, D, generator=generator)
    return [AddVector(vector, strength), AblateDirection(vector, strength), Project(basis, "onto", strength),
            Project(basis, "out", strength), SetComponent(vector, 3.0, strength),
            SetUnits(torch.tensor([0, 5]), torch.tensor([2.0, -1.0]), strength),
            Rescale(0.0, torch.tensor([1, 2]), strength), Rescale(2.5, None, strength)]


@pytest.mark.parametrize("edit", _edits(0.0), ids=lambda edit: type(edit).__name__)
def test_strength_zero_is_exactly_the_identity_for_every_edit(tiny_model, edit):
    tokens = torch.tensor([[1, 5, 9, 12, 3, 7]])
    plain = tiny_model(tokens)
    for rule in (PositionRule(), PositionRule.parse("final+2")):
        with steering(tiny_model, [Intervention("blocks.0.hook_resid_post", edit, rule)]):
            assert torch.equal(tiny_model(tokens), plain)


@pytest.mark.parametrize("edit", _edits(1.0), ids=lambda edit: type(edit).__name__)
def test_full_strength_changes_the_output(tiny_model, edit):
    tokens = torch.tensor([[1, 5, 9, 12, 3, 7]])
    plain = tiny_model(tokens)
    with steering(tiny_model, [Intervention("blocks.0.hook_resid_post", edit)]):
        assert not torch.allclose(tiny_model(tokens), plain)


def test_edits_do_what_their_formulas_say():
    h = torch.randn(4, 7, D)
    u = torch.randn(D)
    unit = u / u.norm()
    assert torch.allclose(AblateDirection(u)(h) @ unit, torch.zeros(4, 7), atol=1e-5)
    assert torch.allclose(SetComponent(u, 3.0)(h) @ unit, torch.full((4, 7), 3.0), atol=1e-5)
    basis = torch.randn(2, D)
    onto, out = Project(basis, "onto")(h), Project(basis, "out")(h)
    assert torch.allclose(onto + out, h, atol=1e-5)
    assert torch.allclose(out @ basis.T, torch.zeros(4, 7, 2), atol=1e-4)
    assert torch.allclose(Project(basis, "onto")(onto), onto, atol=1e-5)
    half = AblateDirection(u, 0.5)(h)
    assert torch.allclose(half @ unit, 0.5 * (h @ unit), atol=1e-5)
    units = SetUnits(torch.tensor([2, 3]), torch.tensor([9.0, -9.0]))(h)
    assert (units[..., 2] == 9).all() and (units[..., 3] == -9).all() and torch.equal(units[..., 4:], h[..., 4:])
    scaled = Rescale(0.0, torch.tensor([1]))(h)
    assert (scaled[..., 1] == 0).all() and torch.equal(scaled[..., 0], h[..., 0])


def test_bad_inputs_fail_early_with_the_reason(tiny_model):
    with pytest.raises(InterventionError, match="non-zero"):
        AblateDirection(torch.zeros(D))
    with pytest.raises(InterventionError, match="rank deficient"):
        Project(torch.ones(2, D))
    with pytest.raises(InterventionError, match="3 units but 2 values"):
        SetUnits(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0]))
    with pytest.raises(InterventionError, match="width 16 but blocks.0.mlp.hook_post has width 32"):
        Intervention("blocks.0.mlp.hook_post", AddVector(torch.zeros(D))).hooks(tiny_model)
    with pytest.raises(ValueError, match="hook_resid_post"):
        Intervention("blocks.0.hook_resid_psot", AddVector(torch.zeros(D))).hooks(tiny_model)
    for text in ("first", "all+2", "final+-1"):
        with pytest.raises(InterventionError, match="position rule"):
            PositionRule.parse(text)


def test_position_rules_parse_and_select_columns():
    assert str(PositionRule.parse("final + 8")) == "final+8"
    assert PositionRule.parse("all") == PositionRule()
    mask = PositionRule.parse("final+2").mask(torch.arange(8), torch.tensor([3, 5]))
    assert mask.tolist() == [[c in (3, 4, 5) for c in range(8)], [c in (5, 6, 7) for c in range(8)]]


class _Marker:
    """An edit that adds 1 everywhere, to see which positions a rule lets through."""

    strength = 1.0

    def width(self) -> None:
        return None

    def __call__(self, activation):
        return activation + 1


def test_rule_counts_positions_across_kv_cached_steps():
    hook = PositionalHook(_Marker(), PositionRule.parse("final+2"))
    prefill = hook(torch.zeros(2, 5, 3), None)
    assert prefill[:, :, 0].tolist() == [[0, 0, 0, 0, 1]] * 2
    steps = [hook(torch.zeros(2, 1, 3), None)[0, 0, 0].item() for _ in range(4)]
    assert steps == [1, 1, 0, 0]
    with prompt_ends(torch.tensor([1, 3])):
        declared = hook(torch.zeros(2, 6, 3), None)
    assert declared[:, :, 0].tolist() == [[0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]]


def test_cached_generation_matches_an_uncached_forward_under_a_position_rule(tiny_model):
    """The rule edits the same absolute positions whether generation uses the KV cache or not."""
    prompt = torch.tensor([[1, 5, 9, 12, 3]])
    vector = 4 * torch.randn(D, generator=torch.Generator().manual_seed(3))
    steer = [Intervention("blocks.0.hook_resid_post", AddVector(vector), PositionRule.parse("final+2"))]
    options = dict(max_new_tokens=6, do_sample=False, use_past_kv_cache=True, stop_at_eos=False, verbose=False)
    with steering(tiny_model, steer):
        generated = tiny_model.generate(prompt, **options).clone()
    plain = tiny_model.generate(prompt, **options)
    assert not torch.equal(generated, plain), "the steering vector should change the greedy continuation"
    with prompt_ends(prompt.shape[1] - 1), steering(tiny_model, steer):
        logits = tiny_model(generated[:, :-1]).detach()
    assert torch.equal(logits[0, prompt.shape[1] - 1:].argmax(-1), generated[0, prompt.shape[1]:])


def test_interventions_compose_in_order(tiny_model):
    tokens = torch.tensor([[1, 5, 9, 12]])
    vector = torch.randn(D)
    both = hooks_for(tiny_model, [Intervention("blocks.0.hook_resid_post", AddVector(vector)),
                                  Intervention("blocks.0.hook_resid_post", AblateDirection(vector))])
    cache_hooks = []

    def record(activation, hook):
        cache_hooks.append(activation.clone())

    composed = tiny_model.run_with_hooks(tokens, fwd_hooks=[*both, ("blocks.0.hook_resid_post", record)])
    assert composed.shape == (1, 4, 64)
    assert torch.allclose(cache_hooks[0] @ (vector / vector.norm()), torch.zeros(1, 4), atol=1e-5)


@pytest.mark.model
def test_mean_edit_norm_is_the_edit_size_per_token_under_the_rule(gemma_fast):
    """|delta h| of adding s * v: |s v| on every token under `all`; under `final+8` on a prompt-only forward only
    the prompt-final token is edited, so the mean is |s v| / tokens; two sites add up."""
    vector = torch.ones(gemma_fast.cfg.d_model)
    prompts = ["Q: hello there\nA:", "Q: a longer question about many things\nA:"]
    every = Intervention("blocks.3.hook_resid_post", AddVector(vector, 2.0))
    assert mean_edit_norm(gemma_fast, [every], prompts) == pytest.approx(2 * float(vector.norm()), rel=1e-5)
    final = Intervention("blocks.3.hook_resid_post", AddVector(vector, 2.0), PositionRule.parse("final+8"))
    tokens = len(gemma_fast.tokenizer(prompts[0])["input_ids"])
    assert mean_edit_norm(gemma_fast, [final], prompts[:1]) == pytest.approx(2 * float(vector.norm()) / tokens,
                                                                           rel=1e-5)
    second = Intervention("blocks.5.hook_resid_post", AddVector(vector, 1.0))
    assert mean_edit_norm(gemma_fast, [every, second], prompts) == pytest.approx(3 * float(vector.norm()), rel=1e-5)
    with pytest.raises(InterventionError, match="at least one prompt"):
        mean_edit_norm(gemma_fast, [every], [])
