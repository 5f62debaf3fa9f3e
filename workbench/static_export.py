"""Static images (png / svg / pdf) of plotly figures without a system browser.

plotly's own exporter (kaleido >= 1) drives an installed Chrome, which these machines do not have and cannot
download. kaleido 0.2.1 ships its own headless Chromium inside the wheel (a packaged exporter, from PyPI); its
Chromium is too old for plotly.js 3, so it renders with plotly.js 2.35.2, taken once from the plotly 5.24.1 wheel on
PyPI (``pip download``) and cached under ``cache_dir()/plotlyjs/``. Set ``WORKBENCH_PLOTLYJS`` to a local
``plotly.min.js`` (2.x) to skip the download.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.store import cache_dir

PLOTLYJS_WHEEL = "plotly==5.24.1"
"""The PyPI wheel plotly.js 2.x is taken from."""
PLOTLYJS_MEMBER = "plotly/package_data/plotly.min.js"
STATIC_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")


class ExportError(WorkbenchError):
    """No static exporter (kaleido 0.2.1 missing, or plotly.js 2.x unavailable), or an unknown format."""


def plotlyjs_path(*, fetch: bool = True) -> Path:
    """A plotly.js 2.x bundle for the packaged exporter (``WORKBENCH_PLOTLYJS``, the cache, or fetched once)."""
    configured = os.environ.get("WORKBENCH_PLOTLYJS")
    if configured:
        if not Path(configured).is_file():
            raise ExportError(f"WORKBENCH_PLOTLYJS={configured} is not a file")
        return Path(configured)
    target = cache_dir() / "plotlyjs" / "plotly-2.35.2.min.js"
    if target.is_file():
        return target
    if not fetch:
        raise ExportError(f"plotly.js 2.x is not cached at {target}; run `workbench figures` once with registry access")
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PLOTLYJS_WHEEL,
                               "-d", scratch], capture_output=True, text=True)
        wheels = list(Path(scratch).glob("plotly-*.whl"))
        if done.returncode != 0 or not wheels:
            raise ExportError(f"could not download {PLOTLYJS_WHEEL} for plotly.js 2.x: {done.stderr.strip()[-300:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial = target.with_suffix(".part")
            partial.write_bytes(wheel.read(PLOTLYJS_MEMBER))
            partial.replace(target)
    return target


@lru_cache(maxsize=1)
def _scope() -> Any:
    try:
        from kaleido.scopes.plotly import PlotlyScope
    except ImportError as error:
        raise ExportError("static export needs kaleido==0.2.1 (a dependency of the workbench: reinstall it)") from error
    return PlotlyScope(plotlyjs=str(plotlyjs_path()), mathjax=False)


def to_static(figure: Any, fmt: str = "png", *, width: int = 900, height: int = 560, scale: float = 2.0) -> bytes:
    """The figure as ``png``, ``svg`` or ``pdf`` bytes."""
    if fmt not in STATIC_FORMATS:
        raise ExportError(f"unknown static format {fmt!r}; use one of {', '.join(STATIC_FORMATS)}")
    layout = figure.layout
    return _scope().transform(figure.to_plotly_json(), format=fmt, width=layout.width or width,
                              height=layout.height or height, scale=scale)


def write_static(figure: Any, path: str | Path, *, scale: float = 2.0) -> Path:
    """Write the figure to ``path``; the format is the file's suffix (``.png``, ``.svg``, ``.pdf``)."""
    path = Path(path)
    data = to_static(figure, path.suffix.lstrip(".").lower(), scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
