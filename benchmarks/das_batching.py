"""Full DAS before and after batching, measured side by side on the same backbones, banks and caches.

Checks out an older commit (default 4e7af3b: one DAS cell trained after another) into a git worktree,
prepares each (benchmark, seed) run once with this checkout (backbone, banks, caches), copies it for
the old code, then runs every Full DAS location job and the selection with both checkouts, alternating
old and new per location so machine noise falls on both alike. Reports the counted CPU seconds of the
location jobs (single-threaded, as the suite times them), per DAS cell, their ratio, and the test IIA
each checkout's Full DAS reaches per variable.

    python benchmarks/das_batching.py --benchmarks hierarchical_equality binary_addition --seeds 0

The old commit's CLI names a location ``--layer`` (``das-layer``); this one's ``--location``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def sh(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> None:
    result = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stderr[-3000:]}")


def prepare(out: Path, benchmarks: list[str], seeds: list[int]) -> None:
    """Backbones, banks and the caches DAS reads, with this checkout's workflow."""
    sys.path.insert(0, str(ROOT))
    from plotlib.layout import RunPaths

    targets = []
    for bench in benchmarks:
        for seed in seeds:
            paths = RunPaths(f"results/{bench}/seed{seed}")
            targets += [paths.model, *(paths.cache(s) for s in ("das_train", "calibration", "test"))]
    config = [f"benchmarks=[{','.join(benchmarks)}]", f"seeds=[{','.join(map(str, seeds))}]"]
    sh([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(out / "new"),
        "--cores", "2", "--config", *config, "--", *targets])


# each checkout runs from its own directory: ``python -m`` puts the working directory first on sys.path


def das_jobs(src: Path, run_dir: Path, spec: Path, seed: int, location: str, old: bool) -> None:
    stage, flag = ("das-layer", "--layer") if old else ("das-location", "--location")
    sh([sys.executable, "-m", "plotlib", "--threads", "1", stage, "--spec", str(spec), "--seed", str(seed),
        "--run-dir", str(run_dir), "--method", "Full DAS", flag, location], cwd=src, env={"PYTHONPATH": str(src)})


def select(src: Path, run_dir: Path, spec: Path, seed: int, locations: list[str], old: bool) -> None:
    flag = "--layers" if old else "--locations"
    sh([sys.executable, "-m", "plotlib", "--threads", "1", "das-select", "--spec", str(spec), "--seed", str(seed),
        "--run-dir", str(run_dir), "--method", "Full DAS", flag, *locations], cwd=src, env={"PYTHONPATH": str(src)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default="4e7af3b", help="the commit to compare against")
    parser.add_argument("--benchmarks", nargs="+", default=["hierarchical_equality", "binary_addition"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default="das_batching", help="working directory (kept, for inspection)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    old_src = out / "old_src"
    if not old_src.exists():
        sh(["git", "worktree", "add", "--detach", str(old_src), args.old], cwd=ROOT)
    prepare(out, args.benchmarks, args.seeds)
    sys.path.insert(0, str(ROOT))
    from plotlib.layout import RunPaths
    from plotlib.pipeline import coarse_location_ids
    from plotlib.io import read_json

    rows = []
    for bench in args.benchmarks:
        spec_path = out / "new" / "results" / bench / "spec.json"
        spec = read_json(spec_path)["spec"]
        for seed in args.seeds:
            new_dir = out / "new" / "results" / bench / f"seed{seed}"
            old_dir = out / "old" / "results" / bench / f"seed{seed}"
            if old_dir.exists():
                shutil.rmtree(old_dir)
            shutil.copytree(new_dir, old_dir)
            locations = coarse_location_ids(spec, seed)
            for location in locations:
                das_jobs(old_src, old_dir, spec_path, seed, location, old=True)
                das_jobs(ROOT, new_dir, spec_path, seed, location, old=False)
            select(old_src, old_dir, spec_path, seed, locations, old=True)
            select(ROOT, new_dir, spec_path, seed, locations, old=False)
            for label, run_dir in (("old", old_dir), ("new", new_dir)):
                paths = RunPaths(str(run_dir))
                runtime = pd.concat([pd.read_parquet(paths.runtime("das_Full DAS", loc)) for loc in locations])
                scores = pd.concat([pd.read_parquet(paths.das_scores("Full DAS", loc)) for loc in locations])
                accuracy = pd.read_parquet(paths.accuracy("Full DAS"))
                test = accuracy[accuracy.metric == "combined"].set_index("variable").value
                rows.append({"benchmark": bench, "seed": seed, "code": label, "cells": len(scores),
                             "cpu_seconds": runtime.seconds_cpu.sum(), "wall_seconds": runtime.seconds_wall.sum(),
                             "test_iia": test.mean(), **{f"iia_{v}": test[v] for v in test.index}})
    table = pd.DataFrame(rows)
    table["cpu_per_cell"] = table.cpu_seconds / table.cells
    pd.set_option("display.width", 200)
    print(table.round(4).to_string(index=False))
    wide = table.pivot_table(index=["benchmark", "seed"], columns="code", values=["cpu_per_cell", "test_iia"])
    wide["speedup_per_cell", ""] = wide["cpu_per_cell", "old"] / wide["cpu_per_cell", "new"]
    wide["iia_change", ""] = wide["test_iia", "new"] - wide["test_iia", "old"]
    print()
    print(wide.round(4).to_string())
    table.to_csv(out / "das_batching.csv", index=False)


if __name__ == "__main__":
    main()
