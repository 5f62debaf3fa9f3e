"""The views a researcher opens first: language mass across generated steps, and across layers and positions.

Builders return plotly figures (never show them); the measurements they draw are plain dataclasses. Names are
imported on first use, so the command line stays light.
"""

from __future__ import annotations

from workbench.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "LensMass": "workbench.views.lens", "logit_lens_figure": "workbench.views.lens",
    "logit_lens_mass": "workbench.views.lens", "MassTrace": "workbench.views.trace",
    "mass_trace": "workbench.views.trace", "mass_trace_figure": "workbench.views.trace",
    "CardConfig": "workbench.views.contexts", "Context": "workbench.views.contexts",
    "unit_contexts": "workbench.views.contexts", "StatisticsConfig": "workbench.views.statistics",
    "LanguageStatistics": "workbench.views.statistics", "unit_statistics": "workbench.views.statistics",
    "clean_cross_entropy": "workbench.views.statistics",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
