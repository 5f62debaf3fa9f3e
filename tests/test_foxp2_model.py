"""FOXP2 stage II on the real embedded model (small data): the language difference is low-rank, stable, and
beats its null models."""

import pytest

from workbench.foxp2.spectra import PairDataConfig, spectral_stage
from workbench.spectral import SpectralConfig

pytestmark = pytest.mark.model


def test_spectral_stage_on_gemma_beats_the_null_models_and_is_cached(gemma_fast, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    data, config = PairDataConfig(n_pairs=48, max_length=48), SpectralConfig(n_bootstrap=6)
    report = spectral_stage(gemma_fast, "hi", data=data, config=config, progress=False)
    frame = report.frame
    assert len(frame) == gemma_fast.cfg.n_layers and set(report.bases) == set(range(gemma_fast.cfg.n_layers))
    first, last = report.window
    assert 3 <= last - first + 1 <= 12
    # correctly paired sentences concentrate the difference more than shuffled pairs, far beyond a random subspace
    assert (frame["mass"] > frame["shuffled_mass"]).mean() >= 0.9
    assert (frame["mass"] > 20 * frame["random_support_mass"]).all()
    assert frame["stability"].median() > 0.9
    again = spectral_stage(gemma_fast, "hi", data=data, config=config, progress=False)
    assert again.window == report.window and again.frame["mass"].tolist() == pytest.approx(frame["mass"].tolist())
