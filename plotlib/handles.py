"""Intervention handles built from a coupling, and their calibration (docs/method.md §4).

A handle for variable V keeps the top-k sites by pi(S | V), renormalizes their weights to sum to
one, and applies ``h <- h + gain * w_S * P_S(h_source - h)`` at all of them in one forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from plotlib.cache import CachedBank
from plotlib.metrics import iia
from plotlib.patching import Edit, Operator, forward_rows, rows_of, run_with_edits, site_subspace, sweep_single_sites
from plotlib.sites import Site


@dataclass(frozen=True)
class Handle:
    """Sites with weights summing to one and a common gain."""

    sites: tuple[Site, ...]
    weights: tuple[float, ...]
    gain: float

    def __post_init__(self) -> None:
        if len(self.sites) != len(self.weights) or not self.sites:
            raise ValueError("a handle needs one weight per site and at least one site")

    def to_json(self) -> dict:
        return {"sites": [s.id for s in self.sites], "weights": list(self.weights), "gain": self.gain}

    @classmethod
    def from_json(cls, blob: dict) -> "Handle":
        return cls(tuple(Site.parse(s) for s in blob["sites"]), tuple(blob["weights"]), float(blob["gain"]))

    @property
    def label(self) -> str:
        return " + ".join(s.id for s in self.sites)

    def mass_by_location(self) -> dict[str, float]:
        mass: dict[str, float] = {}
        for site, w in zip(self.sites, self.weights):
            mass[site.location.id] = mass.get(site.location.id, 0.0) + w
        return mass


#: Coupling masses within this share of a row's largest mass are a tie (Sinkhorn stops at 1e-9 marginal error).
MASS_TIE_TOLERANCE = 1e-6


def rank_sites(pi_row: np.ndarray, cost_row: np.ndarray | None = None) -> np.ndarray:
    """Site indices by decreasing coupling mass pi(S | V). A balanced plan at small eps gives every site
    it fills the same mass (its whole column, 1/n_sites), so masses that tie (to MASS_TIE_TOLERANCE) are
    ranked by their transport cost, the evidence the plan was computed from; then by site order."""
    pi_row = np.asarray(pi_row, dtype=np.float64)
    scale = pi_row.max() if pi_row.size and pi_row.max() > 0 else 1.0
    tied_mass = np.round(pi_row / scale / MASS_TIE_TOLERANCE)
    cost = np.zeros_like(pi_row) if cost_row is None else np.asarray(cost_row, dtype=np.float64)
    return np.lexsort((np.arange(len(pi_row)), cost, -tied_mass))


def top_k_handle(pi_row: np.ndarray, sites: Sequence[Site], k: int, gain: float, cost_row: np.ndarray | None = None) -> Handle:
    """The top-k sites of one row of pi(S | V) (ranked by :func:`rank_sites`), weights renormalized."""
    order = rank_sites(pi_row, cost_row)[:k]
    weights = pi_row[order]
    total = weights.sum()
    weights = weights / total if total > 0 else np.full(len(order), 1.0 / len(order))
    return Handle(tuple(sites[i] for i in order), tuple(float(w) for w in weights), float(gain))


def handle_edits(handle: Handle, bank: CachedBank, widths: dict[str, int], bases: dict[str, torch.Tensor] | None = None) -> list[Edit]:
    bases = bases or {}
    return [
        Edit(site.location, site_subspace(site, widths[site.location.id], bases.get(site.location.id)),
             handle.gain * w, bank.acts("source", site.location.id))
        for site, w in zip(handle.sites, handle.weights)
    ]


@torch.no_grad()
def evaluate_handle(backbone: nn.Module, bank: CachedBank, handle: Handle, variable: str,
                    widths: dict[str, int], bases: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """IIA of ``handle`` for ``variable`` on ``bank``, patching from the cached base activations."""
    edits = handle_edits(handle, bank, widths, bases)
    locations = {e.location.id for e in edits}
    x = bank.inputs_at(backbone, next(iter(locations))) if len(locations) == 1 else bank.x_base
    base_acts, rows = bank.base_acts(locations), forward_rows(backbone, x)
    logits = torch.cat([run_with_edits(backbone, x[i:i + rows], rows_of(edits, slice(i, i + rows)),
                                       {k: v[i:i + rows] for k, v in base_acts.items()})
                        for i in range(0, len(bank.frame), rows)])  # at most one forward's rows at a time
    return iia(bank.task.readout.predict(logits), bank.labels(variable), bank.sensitive(variable))


@torch.no_grad()
def evaluate_handles(backbone: nn.Module, bank: CachedBank, handles: Sequence[Handle], variable: str,
                     widths: dict[str, int], bases: dict[str, torch.Tensor] | None = None) -> list[dict[str, float]]:
    """IIA of many handles: those whose sites share one location are collapsed to one operator each and
    run stacked in the batch dimension (one resumed forward for many handles); others run one by one."""
    bases = bases or {}
    results: list[dict[str, float] | None] = [None] * len(handles)
    by_location: dict[str, list[int]] = {}
    for i, handle in enumerate(handles):
        locations = {s.location for s in handle.sites}
        if len(locations) == 1:
            by_location.setdefault(next(iter(locations)).id, []).append(i)
        else:
            results[i] = evaluate_handle(backbone, bank, handle, variable, widths, bases)
    predict, labels, sensitive = bank.task.readout.predict, bank.labels(variable), bank.sensitive(variable)
    for location, idx in by_location.items():
        operators = [Operator.combine([(handles[i].gain * w, site_subspace(s, widths[location], bases.get(location)))
                                       for s, w in zip(handles[i].sites, handles[i].weights)], widths[location]) for i in idx]
        logits = sweep_single_sites(backbone, location, bank.acts("base", location), bank.acts("source", location), operators, bank.inputs_at(backbone, location))
        for i, out in zip(idx, logits):
            results[i] = iia(predict(out), labels, sensitive)
    return results  # type: ignore[return-value]


#: The calibration grid's own keys in a handle's hyperparameters; the rest are its solver's settings.
HANDLE_KEYS = ("k", "gain", "rank")


def solver_params(hyperparameters: dict) -> dict:
    """The solver settings (eps, beta, ...) among a calibrated handle's hyperparameters."""
    return {k: v for k, v in hyperparameters.items() if k not in HANDLE_KEYS}


def candidate_handles(pi_row: np.ndarray, sites: Sequence[Site], top_k: Iterable[int], gains: Iterable[float],
                      alternatives: int = 1, cost_row: np.ndarray | None = None) -> list[tuple[dict, Handle]]:
    """Every (k, gain) handle of the calibration grid for one row of pi(S | V), in grid order. With
    ``alternatives`` > 1, k = 1 also tries each of the next-ranked sites alone ("the best of its top
    few by calibration", docs/method.md §5); ``rank`` 0 is the top site. ``cost_row`` breaks ties in mass."""
    out = []
    order = rank_sites(pi_row, cost_row)
    for k in (k for k in top_k if k <= len(sites)):
        for g in gains:
            out.append(({"k": k, "gain": g}, top_k_handle(pi_row, sites, k, g, cost_row)))
            if k == 1:
                out += [({"k": 1, "rank": r, "gain": g}, Handle((sites[order[r]],), (1.0,), float(g)))
                        for r in range(1, min(alternatives, len(sites)))]
    return out
