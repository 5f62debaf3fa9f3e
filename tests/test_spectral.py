"""The spectral analysis of FOXP2 stage II on planted data: ranks, mass, stability, null models, the window."""

import pytest
import torch

from workbench.spectral import (
    SpectralConfig,
    SpectralError,
    captured_mass,
    centred,
    centred_mass,
    choose_window,
    chosen_rank,
    content_contrast,
    difference_matrix,
    effective_rank,
    eigengap_rank,
    fisher_ratio,
    layer_spectrum,
    random_support_mass,
    shuffled_pairing,
    singular_values,
    subspace_overlap,
    swapped_sides,
    top_subspace,
)


def test_effective_and_eigengap_ranks_follow_their_definitions():
    assert effective_rank(torch.tensor([1.0, 1.0, 1.0, 0.0])) == 3
    assert effective_rank(torch.tensor([5.0, 0.0, 0.0])) == 1
    assert effective_rank(torch.tensor([2.0, 1.0])) == 2  # exp(H) = 1.65 -> 2
    values = torch.tensor([10.0, 9.0, 1.0, 0.9, 0.8])
    assert eigengap_rank(values) == 2 and eigengap_rank(values, max_rank=1) == 1
    assert eigengap_rank(torch.tensor([3.0, 0.0, 0.0])) == 1  # no gap into exact zeros
    assert chosen_rank(values) == 2
    assert captured_mass(values, 2) == pytest.approx((100 + 81) / (100 + 81 + 1 + 0.81 + 0.64))
    with pytest.raises(SpectralError, match="identical"):
        effective_rank(torch.zeros(3))


def test_subspace_overlap_is_one_for_the_same_span_and_zero_for_orthogonal_ones():
    basis = torch.linalg.qr(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)))[0]
    rotated = basis @ torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))[0]
    assert subspace_overlap(basis, rotated) == pytest.approx(1.0, abs=1e-6)
    eye = torch.eye(10)
    assert subspace_overlap(eye[:, :3], eye[:, 3:6]) == pytest.approx(0.0)


def planted(n_pairs=200, d=32, shift_rank=2, seed=0):
    """English rows of random content; target = English + a language shift living in a ``shift_rank`` subspace."""
    generator = torch.Generator().manual_seed(seed)
    english = torch.randn(n_pairs, d, generator=generator) * 3
    language = torch.linalg.qr(torch.randn(d, shift_rank, generator=generator))[0]
    coefficients = 5 + torch.randn(n_pairs, shift_rank, generator=generator)
    target = english + coefficients @ language.T + 0.05 * torch.randn(n_pairs, d, generator=generator)
    return target, english, language


def test_a_planted_low_rank_language_shift_is_recovered_stably():
    target, english, language = planted(shift_rank=2)
    difference = difference_matrix(target, english)
    spectrum = layer_spectrum(difference, SpectralConfig(n_bootstrap=8), torch.Generator().manual_seed(0))
    assert spectrum.rank == 2 and spectrum.eigengap_rank == 2
    assert spectrum.mass > 0.99 and spectrum.stability > 0.99
    assert subspace_overlap(top_subspace(difference, 2), language) > 0.99


@pytest.mark.parametrize("n_rows", [96, 24])  # more rows than dimensions, and fewer
def test_top_subspace_is_the_svd_s_top_right_singular_vectors_largest_first(n_rows):
    generator = torch.Generator().manual_seed(5)
    difference = (torch.randn(n_rows, 3, generator=generator) * torch.tensor([9.0, 5.0, 3.0])
                  @ torch.linalg.qr(torch.randn(48, 3, generator=generator))[0].T
                  + 0.1 * torch.randn(n_rows, 48, generator=generator))
    right = torch.linalg.svd(difference.double(), full_matrices=False)[2]
    basis = top_subspace(difference, 3)
    assert basis.shape == (48, 3) and torch.allclose(basis.T @ basis, torch.eye(3), atol=1e-6)
    for i in range(3):  # each vector, up to sign, in the SVD's order
        assert abs(float(basis[:, i].double() @ right[i])) == pytest.approx(1.0, abs=1e-6)
    assert subspace_overlap(basis, right[:3].T.float()) == pytest.approx(1.0, abs=1e-6)


def test_null_models_lose_the_language_subspace():
    target, english, language = planted(shift_rank=1)
    generator = torch.Generator().manual_seed(3)
    real = layer_spectrum(difference_matrix(target, english), SpectralConfig(n_bootstrap=8), generator, rank=1)
    shuffled = layer_spectrum(shuffled_pairing(target, english, generator), SpectralConfig(n_bootstrap=8), generator,
                              rank=1)
    contrast = content_contrast(english, generator)
    assert real.mass > 0.99 and shuffled.mass < 0.5 * real.mass
    assert subspace_overlap(top_subspace(contrast, 1), language) < 0.2
    assert random_support_mass(difference_matrix(target, english), 1, generator) < 0.2


def test_window_is_the_run_above_the_typical_layer_within_bounds():
    score = torch.tensor([0.1, 0.1, 0.2, 0.1, 0.1, 0.9, 0.8, 0.95, 0.85, 0.1, 0.1, 0.1])
    assert choose_window(score, 3, 12) == (5, 8)
    assert choose_window(score, 3, 3) in {(5, 7), (6, 8)}
    assert choose_window(score, 6, 12)[1] - choose_window(score, 6, 12)[0] + 1 >= 6
    with pytest.raises(SpectralError, match="cannot hold"):
        choose_window(score[:2], 3, 12)
    with pytest.raises(SpectralError, match="min_width"):
        SpectralConfig(min_width=5, max_width=4)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(SpectralError, match="at least 2 pairs"):
        difference_matrix(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(SpectralError, match="rank must lie"):
        top_subspace(torch.randn(4, 3), 5)


def test_analyse_pairs_finds_the_planted_window_and_round_trips(tmp_path):
    from workbench.foxp2.spectra import SpectralReport, analyse_pairs

    generator = torch.Generator().manual_seed(7)
    n_layers, n_pairs, d = 10, 60, 16
    english = torch.randn(n_layers, n_pairs, d, generator=generator)
    direction = torch.nn.functional.normalize(torch.randn(d, generator=generator), dim=0)
    strength = torch.tensor([0.0, 0.0, 0.0, 6.0, 6.0, 6.0, 6.0, 0.0, 0.0, 0.0]).view(-1, 1, 1)
    target = english + 0.7 * torch.randn(n_layers, n_pairs, d, generator=generator) + strength * direction
    report = analyse_pairs(target, english, SpectralConfig(n_bootstrap=6, min_width=3, max_width=6), target="hi")
    assert report.window == (3, 6) and report.windows() == {"fisher": (3, 6), "mass-excess": report.windows()[
        "mass-excess"], "mass-x-stability": (3, 6)}
    assert (report.frame.loc[3:6, "fisher"] > 20 * report.frame.loc[3:6, "fisher_null"]).all()
    assert report.frame.loc[0, "fisher"] < 0.1 * report.frame.loc[4, "fisher"]
    median = report.frame.loc[4, "median_norm"]
    assert median == pytest.approx(float(english[4].norm(dim=-1).median()))
    assert float(report.normalised_target_vector(4).norm()) == pytest.approx(median, rel=1e-5)
    assert (report.frame.loc[3:6, "mass"] > report.frame.loc[3:6, "shuffled_mass"]).all()
    assert report.frame.loc[4, "stability"] > 0.9 and report.frame.loc[0, "stability"] < 0.6
    assert subspace_overlap(report.bases[4][:, :1], direction.view(-1, 1)) > 0.95
    loaded = SpectralReport.load(report.write(tmp_path))
    assert loaded.window == (3, 6) and torch.equal(loaded.values, report.values)
    assert set(loaded.bases) == set(range(n_layers))
    assert {"spectra.html", "spectral_profile.html", "spectral.csv"} <= {p.name for p in tmp_path.iterdir()}


def test_spectral_figures_have_one_curve_per_layer_and_the_window():
    from workbench.foxp2.spectra import analyse_pairs, spectra_figure, spectral_profile_figure

    target, english, _ = planted(n_pairs=40, d=8, shift_rank=1)
    rows = torch.stack([target, target * 0.9, target * 1.1, target]), torch.stack([english] * 4)
    report = analyse_pairs(*rows, SpectralConfig(n_bootstrap=2, min_width=2, max_width=3))
    spectra = spectra_figure(report)
    assert len(spectra.data) == 4 and spectra.layout.yaxis.type == "log"
    profile = spectral_profile_figure(report)
    assert len(profile.layout.shapes) == 4   # the window shaded in each of the four panels
    assert {t.name for t in profile.data} >= {"mass", "chosen rank", "centred mass, shuffled pairing", "Fisher ratio",
                                              "Fisher ratio, swapped sides"}
    assert "by score: fisher" in profile.layout.title.text


def test_centred_mass_and_fisher_ratio_separate_matched_pairs_from_their_nulls():
    """The uncentred mass is the mean offset for real and shuffled pairs alike; the centred mass sees the planted
    per-pair structure only when the pairs match, and the Fisher ratio only when the sides keep their labels."""
    generator = torch.Generator().manual_seed(5)
    n_pairs, d = 300, 24
    english = torch.randn(n_pairs, d, generator=generator) * 3
    offset, varying = torch.linalg.qr(torch.randn(d, 2, generator=generator))[0].T
    target = (english + 8 * offset + torch.randn(n_pairs, 1, generator=generator) * 2 * varying
              + 0.1 * torch.randn(n_pairs, d, generator=generator))
    difference = difference_matrix(target, english)
    shuffled = shuffled_pairing(target, english, generator)
    assert captured_mass(singular_values(difference), 1) > 0.9
    assert captured_mass(singular_values(shuffled), 1) < captured_mass(singular_values(difference), 1)
    real, rank = centred_mass(difference)
    assert rank == 1 and real > 0.9 and centred_mass(shuffled, rank)[0] < 0.2
    assert torch.allclose(centred(difference).mean(0), torch.zeros(d), atol=1e-4)
    fisher = fisher_ratio(target, english)
    assert fisher == pytest.approx(64 / (0.5 * (9 * d + 9 * d + 4)), rel=0.25)
    assert fisher_ratio(*swapped_sides(target, english, generator)) < 0.05 * fisher
    with pytest.raises(SpectralError, match="zero variance"):
        fisher_ratio(torch.ones(3, 2), torch.ones(3, 2))
    with pytest.raises(SpectralError, match="window_score"):
        SpectralConfig(window_score="best")
