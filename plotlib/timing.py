"""Stage timers that produce runtime rows (wall and CPU seconds) for the report."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd

RUNTIME_COLUMNS = ["benchmark", "seed", "method", "stage", "seconds_wall", "seconds_cpu"]


def synchronize() -> None:
    """Wait for the GPU's queued work, so that a timer measures the work and not only its launch; a no-op
    where torch is not imported or CUDA was never initialized (every CPU run)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@dataclass
class RuntimeLog:
    """Collects one row per timed stage; several timings of the same (method, stage) add up."""

    benchmark: str
    seed: int
    rows: list[dict] = field(default_factory=list)

    @contextmanager
    def stage(self, method: str, stage: str) -> Iterator[None]:
        synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            synchronize()
            self.rows.append({
                "benchmark": self.benchmark, "seed": self.seed, "method": method, "stage": stage,
                "seconds_wall": time.perf_counter() - wall, "seconds_cpu": time.process_time() - cpu,
            })

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=RUNTIME_COLUMNS)
        return frame.groupby(["benchmark", "seed", "method", "stage"], as_index=False, sort=False).sum()
