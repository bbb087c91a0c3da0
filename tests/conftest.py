"""Shared fixtures: a small trained MLP on hierarchical equality, banks and caches in a temp dir."""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="xdg-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from plotlib.banks import make_bank  # noqa: E402
from plotlib.cache import CachedBank, build_cache  # noqa: E402
from plotlib.tasks import make_task  # noqa: E402
from plotlib.training import train_backbone  # noqa: E402
from workflow_runs import tiny_run  # noqa: E402

TRAINING = {"lr": 0.003, "weight_decay": 0.1, "batch_size": 256, "steps": 1500, "eval_every": 10_000,
            "eval_size": 1000, "min_accuracy": 0.9}


@pytest.fixture(scope="session")
def task():
    return make_task("hierarchical_equality", {"n_entities": 100, "entity_dim": 4}, 0)


@pytest.fixture(scope="session")
def mlp(task):
    torch.set_num_threads(1)
    model, _ = train_backbone(task, {"backbone": {"hidden": [16, 16, 16]}, "training": TRAINING}, 0)
    return model


@pytest.fixture(scope="session")
def cached_bank(task, mlp, tmp_path_factory):
    bank = make_bank(task, 400, 0, "calibration")
    path = tmp_path_factory.mktemp("cache") / "calibration.safetensors"
    build_cache(task, mlp, bank, task.coarse_locations(mlp), path)
    return CachedBank(task, bank, path)


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory):
    """One real local Snakemake run of the tiny config, shared by the workflow, cluster and report tests."""
    return tiny_run(tmp_path_factory.mktemp("tiny_local"))
