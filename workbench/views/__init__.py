"""The views a researcher opens first: language mass across generated steps, and across layers and positions.

Builders return plotly figures (never show them); the measurements they draw are plain dataclasses.
"""

from workbench.views.lens import LensMass, logit_lens_figure, logit_lens_mass
from workbench.views.trace import MassTrace, mass_trace, mass_trace_figure

__all__ = ["LensMass", "MassTrace", "logit_lens_figure", "logit_lens_mass", "mass_trace", "mass_trace_figure"]
