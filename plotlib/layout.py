"""File layout of one (benchmark, seed) run: the single source of truth for the Snakefile and the CLI."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


def slug(method: str) -> str:
    """File-name form of a method name: 'Full DAS' -> 'full_das', 'PLOT-UOT' -> 'plot_uot'."""
    return re.sub(r"[^a-z0-9{}]+", "_", method.lower()).strip("_")  # {wildcards} survive


@dataclass(frozen=True)
class RunPaths:
    """Paths under ``<output_dir>/<benchmark>/seed<seed>``; works with Snakemake wildcards too."""

    root: str

    def _p(self, rel: str) -> str:
        return str(Path(self.root) / rel)

    @property
    def model(self) -> str:
        return self._p("backbone/model.pt")

    @property
    def train_metrics(self) -> str:
        return self._p("backbone/metrics.json")

    def bank(self, split: str) -> str:
        return self._p(f"banks/{split}.parquet")

    def cache(self, split: str) -> str:
        return self._p(f"cache/{split}.safetensors")

    def signatures(self, grid: str) -> str:
        """Signatures and cost on a site grid: ``coarse`` (Stage A), ``native`` or ``pca`` (Stage B)."""
        return self._p(f"plot/signatures_{grid}.npz")

    def bases(self, grid: str) -> str:
        """The bases a grid's basis sites refer to (PCA per location; empty for coordinate grids)."""
        return self._p(f"plot/bases_{grid}.safetensors")

    def couplings(self, grid: str) -> str:
        return self._p(f"plot/couplings_{grid}.parquet")

    def handles(self, method: str) -> str:
        return self._p(f"handles/{slug(method)}.json")

    def calibration(self, method: str) -> str:
        return self._p(f"calibration/{slug(method)}.parquet")

    def accuracy(self, method: str) -> str:
        return self._p(f"accuracy/{slug(method)}.parquet")

    def das_scores(self, method: str, tag: str) -> str:
        """A DAS job's calibration scores: ``tag`` is a Full DAS job's location id, or ``guided``."""
        return self._p(f"das/{slug(method)}/{tag}.parquet")

    def das_bases(self, method: str, tag: str) -> str:
        return self._p(f"das/{slug(method)}/{tag}.safetensors")

    def runtime(self, job: str, location: str | None = None) -> str:
        """A job's runtime rows; ``location`` (a location id such as ``L2@last``) is appended verbatim."""
        return self._p(f"runtime/{slug(job)}{'' if location is None else '_' + location}.parquet")

    def log(self, job: str) -> str:
        return self._p(f"logs/{slug(job)}.log")

    def benchmark(self, job: str) -> str:
        return self._p(f"benchmarks/{slug(job)}.tsv")
