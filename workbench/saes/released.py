"""Gemma Scope 2 SAEs as released, read from a local folder with no network.

A released folder is ``<site>/layer_<L>_width_<W>_l0_<size>/`` holding ``params.safetensors`` (``w_enc``,
``w_dec``, ``b_enc``, ``b_dec``, ``threshold``) and, in newer releases, ``config.json``. The site and layer come
from the path, as SAELens' ``gemma_3`` loader reads them (``resid_post`` -> ``blocks.L.hook_resid_post``,
``mlp_out`` -> ``blocks.L.hook_mlp_out``); the weights become a SAELens JumpReLU SAE. SAELens' own
``from_pretrained`` for these releases asks the hub for file ranges even when the files are cached, so this is the
way to use a downloaded copy offline (``load_pretrained_sae`` still takes a release and id online).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from workbench.saes.config import SAEError

RELEASED_WEIGHTS_FILE = "params.safetensors"
RELEASED_CONFIG_FILE = "config.json"
RELEASED_TENSORS: dict[str, str] = {"w_enc": "W_enc", "w_dec": "W_dec", "b_enc": "b_enc", "b_dec": "b_dec",
                                    "threshold": "threshold"}
"""Released tensor name -> SAELens parameter name."""
RELEASED_SITES: dict[str, str] = {"resid_post": "hook_resid_post", "mlp_out": "hook_mlp_out"}
"""Released site folder -> TransformerLens hook (per block). Attention-output and transcoder folders are not read."""
_LAYER = re.compile(r"layer_(\d+)")


def is_released_folder(path: Path) -> bool:
    """Whether ``path`` holds a released Gemma Scope 2 SAE (``params.safetensors``)."""
    return (path / RELEASED_WEIGHTS_FILE).is_file()


def released_hook_name(path: Path) -> str:
    """The hook a released folder's SAE reads, from its path (``.../resid_post/layer_6_width_16k_l0_small``)."""
    resolved = Path(path).resolve()
    match = _LAYER.search(resolved.name)
    site = next((part for part in reversed(resolved.parts) if part in RELEASED_SITES), None)
    if match is None or site is None:
        raise SAEError(f"{path}: a released Gemma Scope 2 folder is named <site>/layer_<L>_width_..., with site one "
                       f"of {', '.join(RELEASED_SITES)} (e.g. resid_post/layer_6_width_16k_l0_small); cannot read the "
                       "site and layer from this path")
    return f"blocks.{int(match.group(1))}.{RELEASED_SITES[site]}"


def load_released_sae(path: str | Path, *, device: str = "cpu") -> Any:
    """A SAELens JumpReLU SAE from a released Gemma Scope 2 folder."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

    path = Path(path)
    hook_name = released_hook_name(path)
    try:
        raw = load_file(str(path / RELEASED_WEIGHTS_FILE), device=device)
    except (SafetensorError, OSError) as error:
        raise SAEError(f"{path / RELEASED_WEIGHTS_FILE} cannot be read ({error}); re-download the SAE") from None
    missing = sorted(set(RELEASED_TENSORS) - set(raw))
    if missing:
        raise SAEError(f"{path / RELEASED_WEIGHTS_FILE} lacks {', '.join(missing)}: not a Gemma Scope 2 JumpReLU SAE "
                       f"(it has {', '.join(sorted(raw))})")
    d_in, d_sae = raw["w_enc"].shape
    released = _released_config(path)
    if released.get("architecture", "jump_relu") != "jump_relu":
        raise SAEError(f"{path}: architecture {released['architecture']!r}; only JumpReLU SAEs are read")
    cfg = handle_config_defaulting({
        "architecture": "jumprelu", "d_in": int(d_in), "d_sae": int(d_sae), "dtype": "float32", "device": device,
        "model_name": released.get("model_name", "google/gemma-3-270m"), "hook_name": hook_name,
        "hook_head_index": None, "apply_b_dec_to_input": False, "normalize_activations": "none",
        "reshape_activations": "none", "prepend_bos": True, "hf_hook_name": released.get("hf_hook_point_in")})
    sae = SAE.from_dict(cfg)
    state = {ours: raw[theirs].float() for theirs, ours in RELEASED_TENSORS.items()}
    sae.process_state_dict_for_loading(state)
    sae.load_state_dict(state, strict=True)
    return sae.to(device).eval().requires_grad_(False)


def _released_config(path: Path) -> dict[str, Any]:
    config_path = path / RELEASED_CONFIG_FILE
    if not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SAEError(f"{config_path} is not valid JSON ({error})") from None
    return config if isinstance(config, dict) else {}


def save_released_sae(sae: Any, directory: str | Path) -> Path:
    """Write ``sae`` (a SAELens JumpReLU SAE) in the released layout (for tests and for sharing with tools that read
    Gemma Scope 2 folders)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = sae.state_dict()
    save_file({theirs: state[ours].detach().float().contiguous().cpu() for theirs, ours in RELEASED_TENSORS.items()},
              str(directory / RELEASED_WEIGHTS_FILE))
    return directory
