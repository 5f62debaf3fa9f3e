"""The command-line options that say how a model is loaded (shared by every command that loads one for steering)."""

from __future__ import annotations

from typing import Any

import typer

DTYPE = typer.Option("float32", help="Weight dtype: float32, bfloat16 (bf16) or float16.")
DEVICE_MAP = typer.Option(None, help="Spread the model over devices (hf/bridge backends): auto, balanced, sequential, "
                          "or a JSON object module -> device.")
CHAT_TEMPLATE = typer.Option(False, help="Put questions through the tokenizer's chat template (instruct models) "
                             "instead of 'Q: ...\\nA:'.")


def placement(dtype: str, device_map: str | None) -> dict[str, Any]:
    """``load_model`` keyword arguments for ``--dtype`` / ``--device-map``, checked before any heavy work."""
    from workbench.devices import parse_device_map, parse_dtype

    return {"dtype": parse_dtype(dtype), "device_map": parse_device_map(device_map)}
