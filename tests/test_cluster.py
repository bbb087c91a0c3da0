"""The SLURM profile on a real single-node SLURM on localhost: jobs run under SLURM, tables equal a local run's.

Skips, saying why, where it cannot run: not root, no apt-get, packages not installable, or an existing
SLURM config on the machine.
"""
from __future__ import annotations

import re
import subprocess

import pandas as pd
import pytest

from local_slurm import LocalSlurm, unavailable_reason
from system_packages import missing_reason
from workflow_runs import ROOT, TINY, snakemake

KEYS = ["benchmark", "seed", "method", "variable", "split", "metric"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = unavailable_reason() or missing_reason(["slurmctld", "slurmd", "munged", "sbatch", "squeue"], ["slurm-wlm", "munge"])
    if reason:
        pytest.skip(f"no localhost SLURM: {reason}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_tiny_run_through_slurm_profile_matches_local_run(slurm, tiny_results, tmp_path):
    # the command the README gives; without --workflow-profile none, profiles/default's
    # default-resources would replace the SLURM profile's (and drop the partition)
    result = snakemake(tmp_path, "--profile", str(ROOT / "profiles" / "slurm"), "--workflow-profile", "none",
                       config=TINY, env=slurm.env, cores=None, timeout=1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:] + slurm.log("slurmctld.log")[-2000:]

    # every non-local job went through sbatch, and SLURM ran each to completion
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", output)
    assert len(job_ids) >= 5, output[-3000:]
    controller = slurm.log("slurmctld.log")
    for job_id in job_ids:
        assert re.search(rf"_job_complete: JobId={job_id} done", controller), f"SLURM has no completion of job {job_id}"
        assert list((tmp_path / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log")), f"no SLURM log for job {job_id}"
    # the small rules went as groups, the Full DAS layers as jobs of their own
    assert "group_prepare" in output and "rule_full_das_location" in output

    local = pd.read_parquet(tiny_results / "accuracy.parquet").sort_values(KEYS).reset_index(drop=True)
    cluster = pd.read_parquet(tmp_path / "results" / "accuracy.parquet").sort_values(KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(local, cluster)


def test_a_gpu_resource_becomes_an_sbatch_gpu_request(slurm, tmp_path):
    """A spec's ``resources.<rule>.gpu`` reaches sbatch as --gpus=N. This SLURM has no GPUs, so it refuses
    the request: that refusal is as far as the path can be followed without one."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "hierarchical_equality.yaml").write_text((ROOT / "benchmarks" / "hierarchical_equality.yaml").read_text())
    (specs / "wide.yaml").write_text("base: hierarchical_equality\n"
                                     "scales: {tiny: {resources: {train_backbone: {mem_mb: 500, runtime: 5, gpu: 1}}}}\n")
    config = {**TINY, "benchmarks": [str(specs / "wide.yaml")]}
    result = snakemake(tmp_path, "--profile", str(ROOT / "profiles" / "slurm"), "--workflow-profile", "none", "--verbose",
                       config=config, env=slurm.env, cores=None, timeout=300)
    output = result.stdout + result.stderr
    calls = [line for line in output.splitlines() if line.startswith("sbatch call:")]
    assert calls and "--gpus=1" in calls[0] and "train_backbone" in calls[0], output[-4000:]
    assert result.returncode != 0 and "submitted with SLURM jobid" not in output
    refused = subprocess.run(["sbatch", "--parsable", "-p", "plotlib", "--gpus=1", "--wrap", "true"], env=slurm.env,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "gres" in refused.stderr, refused.stderr
