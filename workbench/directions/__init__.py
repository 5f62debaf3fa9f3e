"""Residual-stream directions between languages: the fitting (:mod:`.fit`, pure functions over harvested
statistics: DiffMean, PCA, LDA, probe) and the corpus data they are fitted on, harvested once per (model, target,
source, config) and cached in the store (:mod:`.data`).

    from workbench.directions import directions_for
    sets = directions_for(model, "hi")            # method -> DirectionSet at every layer
    vector = sets["diffmean"].vector(4)           # natural scale at layer 4
"""

from workbench.directions.data import DirectionDataConfig, direction_texts, directions_entry, directions_for
from workbench.directions.fit import (
    DIRECTION_METHODS,
    DirectionConfig,
    DirectionError,
    DirectionSet,
    compute_directions,
    diffmean_direction,
    lda_direction,
    pca_direction,
    probe_direction,
)

__all__ = [
    "DIRECTION_METHODS", "DirectionConfig", "DirectionDataConfig", "DirectionError", "DirectionSet",
    "compute_directions", "diffmean_direction", "direction_texts", "directions_entry", "directions_for",
    "lda_direction", "pca_direction", "probe_direction",
]
