"""Measure every registered language's relevance calibration (and the pooled one) with the default config and write
them to ``workbench/data/relevance_calibrations.json``, the table :func:`language_calibration` reads before the store.

Run after changing the encoder, the corpus or the calibration config (``tests/test_relevance.py`` fails until then):

    python scripts/ship_relevance_calibrations.py
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from workbench.evaluation.encoder import POOLED, SHIPPED_CALIBRATIONS, write_shipped_calibrations
from workbench.languages import all_languages


def main() -> None:
    started = time.perf_counter()
    target = Path(str(resources.files("workbench").joinpath("data", SHIPPED_CALIBRATIONS)))
    write_shipped_calibrations(target, [*(lang.code for lang in all_languages()), POOLED])
    print(f"wrote {target} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
