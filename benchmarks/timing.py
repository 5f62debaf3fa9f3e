"""The timing loop every benchmark shares: rounds alternate between the runs, so background load hits them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternating_medians(runs: dict[str, Callable[[], object]], rounds: int
                        ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each run once as a warm-up, then ``rounds`` alternating rounds; the median seconds per run and every time."""
    for run in runs.values():
        run()
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in timings.items()}, timings
