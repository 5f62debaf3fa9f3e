"""The views: language mass during generation and the logit lens, on the real model."""

from __future__ import annotations

import pytest
import torch

from workbench import corpus
from workbench.evaluation.mass import language_mass
from workbench.evaluation.token_sets import token_sets_for
from workbench.interventions import add_vector
from workbench.prompting import QA_TEMPLATE
from workbench.views import logit_lens_figure, logit_lens_mass, mass_trace, mass_trace_figure

LANGUAGES = ["en", "es"]


@pytest.fixture(scope="module")
def prompts():
    return [QA_TEMPLATE.format(prompt=row.prompt) for row in corpus.prompts(split="dev", n=6)]


@pytest.fixture(scope="module")
def spanish_hook(gemma_fast):
    from workbench.activations import batch_texts, harvest

    rows = corpus.parallel(["en", "es"], split="discovery", n=60)
    texts = {lang: [row.text[lang] for row in rows] for lang in LANGUAGES}
    stats = harvest(gemma_fast, batch_texts(gemma_fast.tokenizer, texts, batch_size=16),
                    ["blocks.6.hook_resid_post"], progress=False)
    site = "blocks.6.hook_resid_post"
    return add_vector(gemma_fast, site, stats.mean(site, "es") - stats.mean(site, "en"))


@pytest.mark.model
def test_mass_trace_records_every_step_and_steering_moves_it(gemma_fast, prompts, spanish_hook):
    plain = mass_trace(gemma_fast, prompts, languages=LANGUAGES, max_new_tokens=8)
    steered = mass_trace(gemma_fast, prompts, languages=LANGUAGES, hooks=[spanish_hook], max_new_tokens=8,
                         label="diffmean L6")
    assert plain.mass.shape == (6, 8, 2) and len(plain.tokens) == 6 and all(len(row) == 8 for row in plain.tokens)
    assert (plain.mass >= 0).all() and (plain.mass.sum(-1) <= 1 + 1e-5).all()
    from workbench.generation import generate

    texts = generate(gemma_fast, prompts, max_new_tokens=8)
    for row, text in zip(plain.tokens, texts, strict=True):  # the hover tokens are what greedy decoding emitted
        assert "".join(row).startswith(text) and text.strip()
    spanish = [steered.band("es")[0], plain.band("es")[0]]
    assert spanish[0].mean() > spanish[1].mean() + 0.2  # the Spanish vector raises Spanish mass across the steps
    figure = mass_trace_figure([plain, steered])
    lines = [trace for trace in figure.data if trace.mode == "lines+markers"]
    assert len(figure.data) == 2 * 2 * 2 and len(lines) == 4
    first = lines[0]
    assert first.name == "en (unsteered)" and list(first.y) == pytest.approx(plain.band("en")[0].tolist())
    assert "x" in first.customdata[0] and first.line.dash == "solid" and lines[2].line.dash == "dash"


@pytest.mark.model
def test_the_logit_lens_top_layer_is_the_models_own_next_token_mass(gemma_fast, prompts, spanish_hook):
    lens = logit_lens_mass(gemma_fast, prompts[:1], languages=LANGUAGES)
    sets = token_sets_for(gemma_fast.tokenizer, LANGUAGES)
    encoded = gemma_fast.tokenizer(prompts[:1], return_tensors="pt")
    with torch.inference_mode():
        logits = gemma_fast(encoded["input_ids"], attention_mask=encoded["attention_mask"])
    own = language_mass(logits[0], sets.masks[[sets.languages.index(code) for code in LANGUAGES]])
    n = len(lens.positions)
    assert lens.mass.shape == (18, n, 2) and n == encoded["input_ids"].shape[1]
    assert torch.allclose(lens.mass[-1], own[-n:], atol=1e-4)
    steered = logit_lens_mass(gemma_fast, prompts, languages=LANGUAGES, hooks=[spanish_hook], label="steered")
    plain = logit_lens_mass(gemma_fast, prompts, languages=LANGUAGES)
    spanish = LANGUAGES.index("es")
    assert torch.equal(steered.mass[:6], plain.mass[:6])  # nothing changes before the edited layer
    assert steered.mass[-1, -1, spanish] > plain.mass[-1, -1, spanish] + 0.2
    figure = logit_lens_figure([plain, steered], language="es", marked_layers=[6])
    assert len(figure.data) == 2 and figure.data[1].z[-1][-1] == pytest.approx(float(steered.mass[-1, -1, spanish]))
    assert sum(shape.y0 == 6 for shape in figure.layout.shapes) == 2


@pytest.mark.model
def test_view_command_writes_html_png_and_the_numbers(tmp_path, small_diffmean):
    import json

    from typer.testing import CliRunner

    from workbench.cli import app

    out = tmp_path / "lens.html"
    result = CliRunner().invoke(app, ["view", "lens", "--target", "es", "--layer", "6", "--strength", "1",
                                      "--n-prompts", "2", "--positions", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert set(numbers) == {"unsteered", "diffmean L6 x1"}
    assert len(numbers["unsteered"]["mass"]) == 18 and len(numbers["unsteered"]["positions"]) == 4
    assert "es" in numbers["unsteered"]["languages"] and out.with_suffix(".png").stat().st_size > 10_000
