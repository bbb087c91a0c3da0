"""Run the real Snakemake workflow from tests: in a temp working directory, with a config of the test's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {"output_dir": "results", "scale": "tiny", "seeds": [0], "benchmarks": ["hierarchical_equality", "binary_addition"]}


def snakemake(workdir: Path, *args: str, config: dict | None = None, env: dict | None = None,
              cores: int | None = 2, timeout: int = 900) -> subprocess.CompletedProcess:
    """``snakemake`` on the project's Snakefile in ``workdir``; a run past ``timeout`` fails the test
    (its whole process group is killed) instead of hanging."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    if cores:
        cmd += ["--cores", str(cores)]
    if config is not None:
        path = workdir / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(path)]
    proc = subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"snakemake {' '.join(args)} did not finish in {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tiny_run(workdir: Path) -> Path:
    """The tiny config run locally in ``workdir``; returns its results directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = snakemake(workdir, config=TINY)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir / "results"


def run_stages(spec_file: Path, workdir: Path, refine: tuple[tuple[str, str], ...] = ()):
    """Every stage of one seed-0 run in process (no Snakemake) on the spec's tiny scale: backbone, banks,
    caches, PLOT, Full DAS over every location, PLOT-DAS, and each (grid, method) of ``refine``."""
    from plotlib import pipeline
    from plotlib.config import load_yaml, resolve_benchmark
    from plotlib.io import write_json

    spec = resolve_benchmark(spec_file, "tiny", load_yaml(ROOT / "workflow" / "schemas" / "benchmark.schema.yaml"))
    write_json({"name": Path(spec_file).stem, "scale": "tiny", "spec": spec}, workdir / "spec.json")
    run = pipeline.Run(str(workdir / "spec.json"), 0, str(workdir / "run"))
    pipeline.stage_train(run)
    pipeline.stage_banks(run)
    pipeline.stage_cache(run, ("fit", "calibration", "test", "das_train"))
    pipeline.stage_signatures(run, "coarse")
    pipeline.stage_couple(run, "coarse", ["PLOT"])
    pipeline.stage_calibrate(run, "PLOT")
    locations = [loc.id for loc in run.locations]
    for location in locations:
        pipeline.stage_das_location(run, "Full DAS", location)
    pipeline.stage_das_select(run, "Full DAS", locations)
    pipeline.stage_guided_das(run, "PLOT-DAS")
    for grid, method in refine:
        pipeline.stage_signatures(run, grid)
        pipeline.stage_couple(run, grid, [method])
        pipeline.stage_calibrate(run, method)
    return run


def check_tiny_layer_token_run(spec: str, tmp_path: Path, positions: tuple[str, ...], variables: set[str]) -> None:
    """A shipped transformer spec's tiny scale runs every stage on (layer, position) sites of its named
    positions, and PLOT, Full DAS and PLOT-DAS report an IIA in [0, 1] for every target."""
    import pandas as pd

    run = run_stages(ROOT / "benchmarks" / f"{spec}.yaml", tmp_path)
    assert [loc.id for loc in run.locations] == [f"{layer}@{pos}" for layer in ("emb", "L1", "L2") for pos in positions]
    for method in ("PLOT", "Full DAS", "PLOT-DAS"):
        acc = pd.read_parquet(run.paths.accuracy(method))
        assert set(acc.variable) == variables and acc.value.between(0, 1).all()
