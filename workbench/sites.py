"""Sites: a (layer, kind) value <-> a TransformerLens hook name, validated against a loaded model.

One site name is used both to read and to write an activation; the kinds below are the ones the workbench's
methods use. For a gated MLP ``mlp_pre`` is the gate pre-activation, ``mlp_pre_linear`` the up projection and
``mlp_post`` = act(gate) * up, the vector entering the down projection.
"""

from __future__ import annotations

import difflib
import operator
import re
from dataclasses import dataclass

from workbench.backends import Model
from workbench.errors import WorkbenchError

SITE_KINDS: dict[str, str] = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "mlp_pre": "mlp.hook_pre",
    "mlp_pre_linear": "mlp.hook_pre_linear",
    "mlp_post": "mlp.hook_post",
}
"""Site kind -> hook suffix under ``blocks.{layer}.``."""

_SUFFIX_TO_KIND = {suffix: kind for kind, suffix in SITE_KINDS.items()}
_HOOK_PATTERN = re.compile(r"^blocks\.(\d+)\.(.+)$")
_MLP_KINDS = frozenset({"mlp_pre", "mlp_pre_linear", "mlp_post"})


class SiteError(WorkbenchError):
    """A hook name or site that does not exist (on this model)."""


@dataclass(frozen=True, order=True)
class Site:
    """A place in the model where activations are read or written."""

    layer: int
    """Block index, 0-based."""
    kind: str
    """One of :data:`SITE_KINDS` (``resid_post``, ``mlp_post`` ...)."""

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            close = difflib.get_close_matches(self.kind, SITE_KINDS, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SiteError(f"unknown site kind {self.kind!r}{hint}; valid kinds: {', '.join(SITE_KINDS)}")
        try:
            layer = operator.index(self.layer)
        except TypeError:
            layer = -1
        if isinstance(self.layer, bool) or layer < 0:
            raise SiteError(f"site layer must be an integer >= 0, got {self.layer!r}")

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.{SITE_KINDS[self.kind]}"

    @property
    def is_mlp_neuron_site(self) -> bool:
        """True when the site's units are MLP neurons (width d_mlp) rather than residual directions."""
        return self.kind in _MLP_KINDS

    def width(self, model: Model) -> int:
        """Number of units at this site on ``model`` (d_mlp for MLP-neuron sites, d_model otherwise)."""
        return model.cfg.d_mlp if self.is_mlp_neuron_site else model.cfg.d_model

    @classmethod
    def parse(cls, name: str) -> Site:
        """A site from a hook name (``blocks.6.hook_resid_post``) or short form (``6.resid_post``)."""
        match = _HOOK_PATTERN.match(name)
        if match and match.group(2) in _SUFFIX_TO_KIND:
            return cls(int(match.group(1)), _SUFFIX_TO_KIND[match.group(2)])
        short = re.match(r"^(\d+)\.(\w+)$", name)
        if short and short.group(2) in SITE_KINDS:
            return cls(int(short.group(1)), short.group(2))
        layer = match.group(1) if match else "{l}"
        candidates = [f"blocks.{layer}.{suffix}" for suffix in SITE_KINDS.values()]
        close = difflib.get_close_matches(name, candidates, n=2, cutoff=0.6)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise SiteError(
            f"cannot parse site {name!r}: expected a hook name such as 'blocks.6.hook_resid_post' or a short form "
            f"'6.resid_post'.{hint} Site hook patterns: {', '.join(candidates)}"
        )

    def __str__(self) -> str:
        return self.hook_name


def hook_names(model: Model) -> list[str]:
    """Every hook name the model exposes."""
    return sorted(model.hook_dict)


def validate_hook_name(model: Model, name: str) -> str:
    """Return ``name`` if the model has that hook point, else raise listing the closest valid names."""
    available = model.hook_dict
    if name in available:
        return name
    close = difflib.get_close_matches(name, list(available), n=5, cutoff=0.6)
    hint = f"closest valid names: {', '.join(close)}" if close else f"e.g. {', '.join(sorted(available)[:3])}"
    raise SiteError(f"model has no hook named {name!r}; {hint} ({len(available)} hook points in all)")


def resolve_site(model: Model, site: Site | str) -> Site:
    """A :class:`Site` checked against ``model``: the layer exists and the hook point is present."""
    site = Site.parse(site) if isinstance(site, str) else site
    n_layers = model.cfg.n_layers
    if site.layer >= n_layers:
        raise SiteError(f"site {site} names layer {site.layer}, but the model has layers 0..{n_layers - 1}")
    validate_hook_name(model, site.hook_name)
    return site


def sites_for(model: Model, kinds: str | list[str], layers: list[int] | None = None) -> list[Site]:
    """All sites of the given kind(s) at the given layers (default every layer), validated against ``model``."""
    kinds = [kinds] if isinstance(kinds, str) else kinds
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    return [resolve_site(model, Site(layer, kind)) for kind in kinds for layer in layers]
