"""Stage timers that produce runtime rows (wall and CPU seconds) for the report."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd

RUNTIME_COLUMNS = ["benchmark", "seed", "method", "stage", "seconds_wall", "seconds_cpu"]


@dataclass
class RuntimeLog:
    """Collects one row per timed stage; several timings of the same (method, stage) add up."""

    benchmark: str
    seed: int
    rows: list[dict] = field(default_factory=list)

    @contextmanager
    def stage(self, method: str, stage: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.rows.append({
                "benchmark": self.benchmark, "seed": self.seed, "method": method, "stage": stage,
                "seconds_wall": time.perf_counter() - wall, "seconds_cpu": time.process_time() - cpu,
            })

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=RUNTIME_COLUMNS)
        return frame.groupby(["benchmark", "seed", "method", "stage"], as_index=False, sort=False).sum()
