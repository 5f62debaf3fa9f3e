"""``workbench export``: a steering vector as a llama.cpp control vector (``.gguf``) or ``.safetensors``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from workbench import model_options

console = Console()


def export_command(
        method: str = typer.Option(..., help="diffmean, pca, lda, probe (or pca-matched, lda-matched, probe-matched), "
                                   "or lape-vector (LAPE's neuron edit as its mean MLP-output change per layer)."),
        target: str = typer.Option(..., help="Target language code (any language of the shipped corpus)."),
        source: str = typer.Option("en", help="Language steered away from."),
        layer: int | None = typer.Option(None, help="Layer whose resid_post gets the vector (lape-vector: only this "
                                         "layer's neurons); default: the calibrated one (lape-vector: all layers)."),
        strength: float | None = typer.Option(None, help="Strength, baked into the vector; default: the calibrated "
                                              "one (slow on CPU)."),
        file_format: str = typer.Option(..., "--format", help="gguf (llama.cpp control vector) or safetensors."),
        out: Path = typer.Option(..., help="Output file, ending in .gguf or .safetensors as --format says."),
        model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
        backend: str = typer.Option("hf", help="hooked, bridge or hf (lape-vector: hooked or hf)."),
        dtype: str = model_options.DTYPE, device_map: str | None = model_options.DEVICE_MAP,
        chat_template: bool = model_options.CHAT_TEMPLATE) -> None:
    """Export METHOD's steering vector for TARGET: one vector per layer, added at blocks.{L}.hook_resid_post at every
    position, strength included (gguf: llama.cpp's direction.<L>)."""
    from workbench.export import ExportError, check_format, check_vector_method, steering_vectors, write_vectors
    from workbench.inputs import distinct_languages, finite
    from workbench.languages import get_language

    check_vector_method(method)
    placement = model_options.placement(dtype, device_map)
    for code in (target, source):
        get_language(code)
    distinct_languages(target, source)
    check_format(file_format, out)
    if strength is not None:
        finite(strength, "--strength")
    if layer is not None and layer < 0:
        raise ExportError(f"--layer must be a block index >= 0, got {layer}")
    if layer == 0 and file_format == "gguf":
        raise ExportError("--layer 0 cannot be written as a llama.cpp control vector (direction.<n> is added after "
                          "block n and direction.0 is rejected); choose --layer 1 or above, or --format safetensors")

    from workbench.models import load_model

    loaded = load_model(model, backend=backend, chat_template=chat_template, **placement)
    vectors = steering_vectors(loaded, method, target, source, layer=layer,
                               strength=strength)
    write_vectors(vectors, out)
    norms = ", ".join(f"{hook} |v| {float(vector.norm()):.2f}" for hook, vector in zip(vectors.hook_names,
                                                                                        vectors.vectors, strict=True))
    console.print(f"{out}: {method} {source}->{target} x{vectors.strength:g} "
                  f"({'calibrated on dev' if vectors.calibrated else 'as given'}); {norms}")
    if file_format == "gguf":
        first, last = vectors.layers[0], vectors.layers[-1]
        console.print(f"llama.cpp adds direction.<L> after block L: llama-cli -m MODEL.gguf --control-vector-scaled "
                      f"{out} 1.0 --control-vector-layer-range {first} {last}", soft_wrap=True)
