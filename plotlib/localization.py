"""Localization against planted ground truth: how much of what a method found is the planted units.

A method's answer is a set of orthonormal spans, one per location (a handle's sites, or a DAS
subspace). With G the planted units' columns and D the decoys' at the planted location, and U the
answer's span there, the overlap ||G^T U||_F^2 counts the planted directions the answer holds (for
native units: how many planted units it includes). Precision is the overlap over the answer's
dimensions, recall the overlap over the planted ones; ``decoy_dims`` is ||D^T U||_F^2. An answer
wholly at the planted layer is a location hit.
"""
from __future__ import annotations

import torch

from plotlib.tasks.planted import Planted

METRICS = ("precision", "recall", "decoy_dims", "location_hit")
#: An answer is decoy-free when it holds less than half a decoy direction.
DECOY_FREE_BELOW = 0.5


def localization(planted: Planted, spans: dict[str, torch.Tensor]) -> dict[str, float]:
    """Precision, recall, decoy dimensions and location hit (every dimension at the planted location) of
    ``spans`` (location id -> orthonormal columns (width, r))."""
    dims = sum(span.shape[1] for span in spans.values())
    if dims == 0:
        raise ValueError("an answer with no dimensions has no localization")
    here = spans.get(planted.location)
    overlap = decoys = 0.0
    if here is not None:
        overlap = float((planted.units.T.double() @ here.double()).square().sum())
        decoys = float((planted.decoys.T.double() @ here.double()).square().sum())
    return {"precision": overlap / dims, "recall": overlap / planted.units.shape[1], "decoy_dims": decoys,
            "location_hit": float(set(spans) == {planted.location})}
