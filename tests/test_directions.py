import pytest
import torch

from workbench.activations import HarvestConfig, batch_texts, harvest
from workbench.directions import (
    DirectionError,
    DirectionSet,
    compute_directions,
    diffmean_direction,
    lda_direction,
    pca_direction,
    probe_direction,
)

D = 12


def _planted(n: int = 600, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two overlapping classes separated along ``axis`` only; a nuisance direction is shared by both."""
    generator = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(D, generator=generator), dim=0)
    nuisance = torch.nn.functional.normalize(torch.randn(D, generator=generator), dim=0)
    nuisance = torch.nn.functional.normalize(nuisance - (nuisance @ axis) * axis, dim=0)

    def draw(shift: float) -> torch.Tensor:
        noise = 0.3 * torch.randn(n, D, generator=generator)
        spread = 0.2 * torch.randn(n, 1, generator=generator) * nuisance
        return noise + spread + shift * axis

    return draw(+0.4), draw(-0.4), axis


@pytest.mark.parametrize("method", ["diffmean", "pca", "lda", "probe"])
def test_every_method_recovers_a_planted_language_axis_with_the_right_sign(method):
    target, source, axis = _planted()
    direction = {
        "diffmean": lambda: diffmean_direction(target.mean(0), source.mean(0)),
        "pca": lambda: pca_direction(target, source),
        "lda": lambda: lda_direction(target, source),
        "probe": lambda: probe_direction(target, source),
    }[method]()
    assert torch.isclose(direction.norm(), torch.tensor(1.0), atol=1e-5)
    assert direction @ axis > 0.9


def test_lda_discounts_a_correlated_nuisance_that_diffmean_follows():
    generator = torch.Generator().manual_seed(1)
    shared = torch.randn(800, 1, generator=generator)
    # Dimension 1 separates the classes slightly but is dominated by noise shared with dimension 0.
    def draw(shift: float) -> torch.Tensor:
        x = 0.05 * torch.randn(800, 2, generator=generator)
        return torch.cat([x[:, :1] + shared, x[:, 1:] + shared + shift], dim=1)

    target, source = draw(0.5), draw(-0.5)
    lda = lda_direction(target, source)
    assert lda[0] < 0 < lda[1]               # subtracts the shared noise
    assert diffmean_direction(target.mean(0), source.mean(0))[0].abs() < 0.2


def test_compute_directions_from_one_harvest_and_round_trip(tiny_model, tmp_path):
    class Tokenizer:
        def __call__(self, texts, **kwargs):
            ids = [[1] + [3 + (ord(c) % 50) for c in text] for text in texts]
            width = max(map(len, ids))
            return {"input_ids": torch.tensor([row + [0] * (width - len(row)) for row in ids]),
                    "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])}

    texts = {"aa": ["abcde", "bcdef", "cdefg", "defgh"] * 5, "bb": ["vwxyz", "uvwxy", "tuvwx", "stuvw"] * 5,
             "cc": ["klmno", "lmnop", "mnopq"] * 5}
    batches = batch_texts(Tokenizer(), texts, batch_size=4)
    stats = harvest(tiny_model, batches, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                    config=HarvestConfig(sample_tokens=64), bos_token_id=1, progress=False)
    sets = compute_directions(stats, "aa", "bb", metadata={"note": "tiny"})
    assert set(sets) == {"diffmean", "pca", "lda", "probe"}
    diffmean = sets["diffmean"]
    expected = stats.mean("blocks.1.hook_resid_post", "aa") - stats.mean("blocks.1.hook_resid_post", "bb")
    torch.testing.assert_close(diffmean.vector(1), expected, atol=1e-5, rtol=1e-5)   # natural scale = raw DiffMean
    assert torch.isclose(diffmean.vector(1, "unit").norm(), torch.tensor(1.0))
    for method in ("pca", "lda", "probe"):  # natural scale: the means' difference projected on the direction
        unit = sets[method].vector(1, "unit")
        torch.testing.assert_close(sets[method].vector(1), (expected @ unit) * unit, atol=1e-4, rtol=1e-4)
    assert sets["probe"].metadata["probe_negatives"] == ["bb", "cc"]
    loaded = DirectionSet.load(sets["lda"].save(tmp_path), "lda")
    assert loaded.layers == (0, 1) and torch.equal(loaded.units, sets["lda"].units)
    assert loaded.metadata["note"] == "tiny" and loaded.site(1) == "blocks.1.hook_resid_post"
    with pytest.raises(DirectionError, match="not harvested"):
        compute_directions(stats, "zz", "bb")
    with pytest.raises(DirectionError, match="unknown direction method"):
        compute_directions(stats, "aa", "bb", methods=["ica"])
    with pytest.raises(DirectionError, match="no lda direction at layer 5"):
        loaded.vector(5)
