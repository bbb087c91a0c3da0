"""Interchange intervention accuracy (IIA), on sensitive and invariant pairs and combined."""
from __future__ import annotations

import math

import torch


def iia(predictions: torch.Tensor, counterfactual: torch.Tensor, sensitive: torch.Tensor) -> dict[str, float]:
    """IIA split by sensitivity; ``combined`` is the mean of the two (or the one that exists).

    Predictions and labels are integer labels (bit masks for multi-bit outputs), so a match is an
    exact match over all output bits.
    """
    if predictions.shape != counterfactual.shape or predictions.shape != sensitive.shape:
        raise ValueError(f"shape mismatch: {tuple(predictions.shape)}, {tuple(counterfactual.shape)}, {tuple(sensitive.shape)}")
    hit = (predictions == counterfactual).float()
    sens = sensitive.bool()
    out = {"n_sensitive": int(sens.sum()), "n_invariant": int((~sens).sum())}
    out["sensitive"] = float(hit[sens].mean()) if out["n_sensitive"] else math.nan
    out["invariant"] = float(hit[~sens].mean()) if out["n_invariant"] else math.nan
    present = [v for v in (out["sensitive"], out["invariant"]) if not math.isnan(v)]
    out["combined"] = sum(present) / len(present) if present else math.nan
    return out


def selection_score(scores: dict[str, float]) -> float:
    """The calibration score used for every choice: mean of sensitive and invariant IIA."""
    return scores["combined"]
