"""SAEs on disk: SAELens' own format (one directory per site), local loading, pretrained releases, fit checks.

A directory written by :func:`workbench.saes.train_saes` holds one sub-directory per site, named by its hook
(``blocks.6.hook_resid_post/``), each loadable by ``sae_lens.SAE.load_from_disk``: ``cfg.json`` and
``sae_weights.safetensors`` (SAELens), plus the workbench's ``training.json`` and, after evaluation,
``quality.json``. Released Gemma Scope 2 folders (``resid_post/layer_6_width_16k_l0_small/params.safetensors``)
load the same way, offline (:mod:`workbench.saes.released`). Every SAE is checked against the model it is used
with: its hook must exist (close matches are named otherwise) and its input width must be the site's width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from workbench.backends import Model
from workbench.saes.config import SAEError
from workbench.saes.released import (
    RELEASED_WEIGHTS_FILE,
    is_released_folder,
    load_released_sae,
    released_hook_name,
)
from workbench.sites import Site, SiteError, resolve_site

SAE_CONFIG_FILE = "cfg.json"
SAE_WEIGHTS_FILE = "sae_weights.safetensors"
TRAINING_FILE = "training.json"
QUALITY_FILE = "quality.json"


def sae_hook_name(sae: Any) -> str:
    """The hook an SAE reads (from its SAELens metadata)."""
    metadata = getattr(sae.cfg, "metadata", None)
    name = getattr(metadata, "hook_name", None) if metadata is not None else None
    if not name:
        raise SAEError("the SAE's config names no hook (cfg.metadata.hook_name is empty); set it, e.g. "
                       "sae.cfg.metadata.hook_name = 'blocks.6.hook_resid_post'")
    return str(name)


def check_sae_fits(sae: Any, model: Model) -> Site:
    """The SAE's site on ``model``; raises if the hook is missing (naming close matches) or the width differs."""
    name = sae_hook_name(sae)
    try:
        site = resolve_site(model, name)
    except SiteError as error:
        raise SAEError(f"SAE hook {name!r} does not fit the model: {error}") from None
    width = site.width(model)
    if sae.cfg.d_in != width:
        raise SAEError(f"SAE for {name} has input width d_in={sae.cfg.d_in}, but {site.hook_name} on this model has "
                       f"width {width} (d_model={model.cfg.d_model}, d_mlp={model.cfg.d_mlp}): it was trained on "
                       "another model or site")
    if getattr(sae.cfg, "normalize_activations", "none") not in ("none",):
        raise SAEError(f"SAE for {name} normalises its input at run time ({sae.cfg.normalize_activations!r}); the "
                       "workbench's feature edits need a plain affine SAE (fold the normalisation first)")
    return site


def load_sae(path: str | Path, model: Model | None = None, *, device: str = "cpu") -> Any:
    """An SAE saved in SAELens' format (``SAE.load_from_disk``) or a Gemma Scope 2 folder as released
    (:mod:`workbench.saes.released`), checked against ``model`` when given."""
    from sae_lens import SAE

    path = Path(path)
    verify_sae_files(path)
    if is_released_folder(path):
        weights = path / RELEASED_WEIGHTS_FILE
        sae = load_released_sae(path, device=device)
    else:
        weights = path / SAE_WEIGHTS_FILE
        sae = SAE.load_from_disk(str(path), device=device).eval().requires_grad_(False)
    for name, parameter in sae.named_parameters():
        if not torch.isfinite(parameter).all():
            raise SAEError(f"{weights}: parameter {name} holds NaN or inf; the SAE cannot be used (retrain it)")
    if model is not None:
        check_sae_fits(sae, model)
    return sae


def load_pretrained_sae(release: str, sae_id: str, model: Model | None = None, *, device: str = "cpu",
                        converter: Any | None = None) -> Any:
    """A pretrained SAE by SAELens release and id (``SAE.from_pretrained``; needs the hub or its local cache).

    ``release`` is a name from SAELens' ``pretrained_saes.yaml`` or a Hugging Face repo id holding SAELens-format
    folders; ``converter`` overrides SAELens' loader (same signature as its Hugging Face loaders). The SAE is
    checked against ``model`` when given.
    """
    from sae_lens import SAE

    try:
        sae = SAE.from_pretrained(release, sae_id, device=device, converter=converter).eval().requires_grad_(False)
    except (ValueError, OSError) as error:
        raise SAEError(f"cannot load pretrained SAE {release!r} / {sae_id!r}: {error}") from error
    if model is not None:
        check_sae_fits(sae, model)
    return sae


def verify_sae_files(path: Path) -> None:
    """Cheap checks of an SAE directory before anything is loaded: both files there, ``cfg.json`` a JSON object
    (a released Gemma Scope 2 folder: its site and layer readable from the path), the weights' safetensors header
    readable and every tensor's bytes present."""
    if is_released_folder(path):
        released_hook_name(path)
        weights = path / RELEASED_WEIGHTS_FILE
    elif not (path / SAE_CONFIG_FILE).is_file() or not (path / SAE_WEIGHTS_FILE).is_file():
        raise SAEError(f"{path} is not an SAE directory: SAELens' needs {SAE_CONFIG_FILE} and {SAE_WEIGHTS_FILE}, "
                       f"a released Gemma Scope 2 folder {RELEASED_WEIGHTS_FILE}")
    else:
        read_sae_config(path)
        weights = path / SAE_WEIGHTS_FILE
    try:
        with safe_open(str(weights), framework="pt") as handle:
            for name in handle.keys():
                handle.get_slice(name)
    except (SafetensorError, OSError) as error:
        raise SAEError(f"{weights} cannot be read ({error}): truncated or not a safetensors file; retrain or "
                       "re-download the SAE") from None


def read_sae_config(directory: Path) -> dict[str, Any]:
    """The parsed ``cfg.json`` of an SAE directory; a file that is not a JSON object is an :class:`SAEError`."""
    path = directory / SAE_CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SAEError(f"{path} is not valid JSON ({error}); expected SAELens' cfg.json") from None
    if not isinstance(config, dict):
        raise SAEError(f"{path} holds a JSON {type(config).__name__}, expected SAELens' cfg.json object")
    return config


def site_directories(root: str | Path) -> dict[str, Path]:
    """Hook name -> SAE directory, for every SAELens SAE directory directly under ``root`` (or ``root`` itself), or
    every released Gemma Scope 2 folder under it (``resid_post/layer_6_width_16k_l0_small``; one per site: where a
    release has several widths or sparsities for a site, point at a directory holding the chosen ones)."""
    root = Path(root)
    if not root.is_dir():
        raise SAEError(f"no SAE directory at {root}")
    if is_released_folder(root) or not (root / SAE_CONFIG_FILE).is_file() and any(root.rglob(RELEASED_WEIGHTS_FILE)):
        return _released_directories(root)
    candidates = [root] if (root / SAE_CONFIG_FILE).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
    found: dict[str, Path] = {}
    for directory in candidates:
        if not (directory / SAE_CONFIG_FILE).is_file():
            continue
        config = read_sae_config(directory)
        name = (config.get("metadata") or {}).get("hook_name") or config.get("hook_name")
        if name:
            found[name] = directory
    if not found:
        raise SAEError(f"{root} holds no SAE directories (SAELens sub-directories with {SAE_CONFIG_FILE}, or released "
                       f"Gemma Scope 2 folders with {RELEASED_WEIGHTS_FILE})")
    return found


def _released_directories(root: Path) -> dict[str, Path]:
    folders = [root] if is_released_folder(root) else sorted(p.parent for p in root.rglob(RELEASED_WEIGHTS_FILE))
    found: dict[str, list[Path]] = {}
    for folder in folders:
        found.setdefault(released_hook_name(folder), []).append(folder)
    ambiguous = {name: paths for name, paths in found.items() if len(paths) > 1}
    if ambiguous:
        name, paths = next(iter(ambiguous.items()))
        raise SAEError(f"{root} holds {len(paths)} SAEs for {name} ({', '.join(p.name for p in paths)}); point at a "
                       "directory with one per site (e.g. link the chosen width and sparsity into it)")
    return {name: paths[0] for name, paths in found.items()}


def checked_sae_directories(root: str | Path, sites: list[str] | None = None) -> dict[str, Path]:
    """Hook name -> SAE directory under ``root`` (optionally only ``sites``), each verified by
    :func:`verify_sae_files`: call it before loading a model, so a bad folder fails first."""
    directories = site_directories(root)
    if sites:
        wanted = {Site.parse(site).hook_name for site in sites}
        missing = sorted(wanted - set(directories))
        if missing:
            raise SAEError(f"no SAE for {', '.join(missing)} under {root}; it has {', '.join(sorted(directories))}")
        directories = {name: path for name, path in directories.items() if name in wanted}
    for directory in directories.values():
        verify_sae_files(directory)
    return dict(sorted(directories.items(), key=lambda item: Site.parse(item[0])))


def sae_parameters_digest(sae: Any) -> str:
    """sha256 of an SAE's parameters (names, shapes and bytes): what results computed from a loaded SAE are keyed
    by."""
    import hashlib

    hasher = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        hasher.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        hasher.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return hasher.hexdigest()[:16]


def sae_weights_digests(root: str | Path, sites: list[str] | None = None) -> dict[str, str]:
    """Hook name -> sha256 of its SAE's weights file under ``root`` (what a cached result built from them is keyed
    by, so replaced weights are never mistaken for the old ones)."""
    from workbench.store import sha256_file

    return {name: sha256_file(path / (RELEASED_WEIGHTS_FILE if is_released_folder(path) else SAE_WEIGHTS_FILE))
            for name, path in checked_sae_directories(root, sites).items()}


def load_sae_dir(root: str | Path, model: Model | None = None, *, sites: list[str] | None = None,
                 device: str = "cpu") -> dict[str, Any]:
    """Hook name -> SAE for every site under ``root`` (optionally only ``sites``, hook names or short forms)."""
    return {name: load_sae(path, model, device=device)
            for name, path in checked_sae_directories(root, sites).items()}


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
