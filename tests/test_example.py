"""The worked example in examples/custom_task runs through the real workflow from its own folder: a
spec outside benchmarks/, a task registered by @register_task in the example's module, no PYTHONPATH."""
from __future__ import annotations

import shutil

import pandas as pd

from workflow_runs import ROOT, snakemake


def test_the_custom_task_example_runs_from_its_own_folder(tmp_path):
    folder = tmp_path / "custom_task"
    shutil.copytree(ROOT / "examples" / "custom_task", folder)
    done = snakemake(folder, "--configfile", str(folder / "config.yaml"), env={"PYTHONPATH": ""}, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = pd.read_csv(folder / "results" / "summary.csv")
    assert set(summary.method) == {"PLOT", "brute-force", "Full DAS", "PLOT-DAS"}
    assert (summary.benchmark == "sum_compare").all() and summary.iia.between(0, 1).all()
    assert "## sum_compare" in (folder / "results" / "report.md").read_text()
