"""Pair banks: (base, source) pairs with families, per-variable counterfactual labels and
sensitive/invariant flags, stored as parquet.

Columns: ``pair``, ``family``, ``base_<input>`` and ``source_<input>`` per input variable,
``y_base`` (integer label), and for every target variable V ``cf_<V>`` (its counterfactual
label) and ``sensitive_<V>`` (``cf_<V> != y_base``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from plotlib.tasks import Task

SPLITS = ("fit", "calibration", "test", "das_train")


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Independent, seeded randomness per split, so banks never share draws."""
    if split not in SPLITS:
        raise ValueError(f"unknown bank split {split!r}; splits are {SPLITS}")
    return np.random.default_rng([seed, SPLITS.index(split), 104729])


def make_bank(task: Task, sizes: dict[str, int] | int, seed: int, split: str) -> pd.DataFrame:
    """The pairs of bank ``split``, labelled by the causal model. ``sizes`` is the spec's ``banks``
    section (or just this split's size)."""
    rng = split_rng(seed, split)
    sizes = {split: sizes} if isinstance(sizes, int) else sizes
    if sizes.get(split, 0) <= 0:
        raise ValueError(f"bank {split!r} needs a positive size, got {sizes.get(split)}")
    base, source, families = task.bank_pairs(split, sizes, rng)
    n = len(base)
    model = task.causal_model
    frame = pd.DataFrame({"pair": np.arange(n), "family": families})
    for col in model.inputs:
        frame[f"base_{col}"] = base[col].to_numpy()
        frame[f"source_{col}"] = source[col].to_numpy()
    frame["y_base"] = task.outputs(base)
    base_rows = base[list(model.inputs)].to_dict("records")
    source_rows = source[list(model.inputs)].to_dict("records")
    for var in task.targets:
        cf = np.array([task.label(model.interchange(b, s, var)) for b, s in zip(base_rows, source_rows)])
        frame[f"cf_{var}"] = cf
        frame[f"sensitive_{var}"] = cf != frame["y_base"].to_numpy()
    return frame


def bank_inputs(bank: pd.DataFrame, role: str) -> pd.DataFrame:
    """The base or source inputs of a bank as a frame of input-variable columns."""
    if role not in ("base", "source"):
        raise ValueError(f"role must be 'base' or 'source', got {role!r}")
    prefix = f"{role}_"
    cols = [c for c in bank.columns if c.startswith(prefix)]
    return bank[cols].rename(columns=lambda c: c[len(prefix):]).reset_index(drop=True)
