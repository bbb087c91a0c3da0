"""Output-effect signatures (docs/method.md §2) and the cost between them.

The abstract effect of variable V on a pair is onehot(y*_V) - onehot(y_base); the neural effect of
site S is p(full interchange at S) - p(base). Laid out over the same pairs in the same order, either
concatenated pair by pair or averaged per counterfactual family, then L2-normalized per row.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import ot
import torch
from torch import nn

from plotlib.cache import CachedBank
from plotlib.patching import Subspace, sweep_single_sites
from plotlib.sites import Site

AGGREGATES = ("concat", "family_mean")
COSTS = ("sqeuclidean", "cosine", "cityblock")


def abstract_effects(bank: CachedBank, variable: str) -> torch.Tensor:
    """(pairs, out) effect of interchanging ``variable`` in the causal model."""
    layout = bank.task.readout.layout
    return layout(bank.labels(variable)) - layout(bank.y_base)


@torch.no_grad()
def neural_effects(backbone: nn.Module, bank: CachedBank, sites: Sequence[Site], subspaces: Sequence[Subspace]) -> torch.Tensor:
    """(sites, pairs, out) effect of a full interchange at each site; sites sharing a location run
    stacked in one forward from the cached base activation."""
    probs = bank.task.readout.probs
    base_probs = probs(bank.acts("base", "logits"))
    out = torch.empty(len(sites), len(bank.frame), base_probs.shape[-1])
    by_location: dict[str, list[int]] = {}
    for i, site in enumerate(sites):
        by_location.setdefault(site.location.id, []).append(i)
    for location, idx in by_location.items():
        logits = sweep_single_sites(backbone, location, bank.acts("base", location), bank.acts("source", location),
                                    [subspaces[i] for i in idx], bank.inputs_at(backbone, location))
        out[idx] = probs(logits) - base_probs
    if not torch.isfinite(out).all():
        raise FloatingPointError("non-finite neural effects")
    return out


def signature(effects: torch.Tensor, families: Sequence[str], aggregate: str, normalize: bool) -> np.ndarray:
    """Rows of signatures from effects (rows, pairs, out)."""
    effects = effects.double()
    if aggregate == "family_mean":
        fam = np.asarray(families)
        blocks = [effects[:, torch.as_tensor(fam == f)].mean(1) for f in sorted(set(fam))]
        flat = torch.cat(blocks, dim=1)
    elif aggregate == "concat":
        flat = effects.reshape(effects.shape[0], -1)
    else:
        raise ValueError(f"unknown signature aggregate {aggregate!r}; options are {AGGREGATES}")
    sig = flat.numpy()
    if normalize:
        norms = np.linalg.norm(sig, axis=1, keepdims=True)
        sig = sig / np.where(norms > 0, norms, 1.0)
    return sig


def active_rows(effects: torch.Tensor, rel_tol: float = 1e-6) -> np.ndarray:
    """Which sites change any output: effect norm above ``rel_tol`` x the largest site's. A site below
    it is inert (a dead neuron, a direction the data never varies along): its normalized signature
    would be float noise blown up to unit length."""
    norms = torch.linalg.vector_norm(effects.double().reshape(effects.shape[0], -1), dim=1).numpy()
    return norms > rel_tol * max(norms.max(initial=0.0), 1e-300)


def cost_matrix(abstract: np.ndarray, neural: np.ndarray, metric: str) -> np.ndarray:
    """C[V, S] between abstract and neural signatures (squared Euclidean by default)."""
    if metric not in COSTS:
        raise ValueError(f"unknown cost {metric!r}; options are {COSTS}")
    if abstract.shape[1] != neural.shape[1]:
        raise ValueError(f"signature lengths differ: abstract {abstract.shape[1]}, neural {neural.shape[1]}")
    return ot.dist(abstract, neural, metric=metric)
