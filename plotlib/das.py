"""Distributed Alignment Search: one low-rank orthonormal implementation (docs/method.md §6), trained a whole
grid at a time.

The intervention is the interchange ``h <- h + Q Q^T (h_source - h)`` with Q (d x k) orthonormal,
parametrized as torch's ``orthogonal`` does (a fixed random base times a Householder product, or a
matrix exponential when k fills the room). ``within`` (d x r, orthonormal) restricts Q to a support
(native coordinates or a PCA span): Q = within @ Q'. Training uses cached base and source activations
at the location and runs only the layers after it, with the backbone frozen.

Every *cell* of a location's grid (variable x k x lr, and its support) keeps its own parameters, Adam
state and batch order, all fixed by its seed; the cells are trained together, their patched activations
stacked in the batch dimension of one resumed forward per step, the way sweeps stack sites. Training a
cell alone or beside others gives the same subspace (to float tolerance).

A *Boundless DAS* cell (Wu et al. 2023) learns its dimension instead of taking it from the grid: a full
rotation R of the room, and a boundary b in (0, 1] that softly selects R's first b x room directions,
weights ``sigmoid((b * room - i - 1/2) / T)`` on direction i, with the temperature T annealed linearly
over training and a penalty on b added to its loss. Its answer is R's first round(b x room) directions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from plotlib.cache import CachedBank
from plotlib.metrics import iia
from plotlib.patching import Subspace, interchange, sweep_single_sites

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One DAS training at a location: ``variable``, dimension ``k``, learning rate ``lr``, optionally
    inside a support ``within`` (d x r) named ``support`` (``location``: no restriction). ``seed`` fixes
    its initial rotation and batch order; callers derive it from (run seed, variable, location, k, lr),
    never from the method, so two methods that train the same cell get the same subspace (common random
    numbers)."""

    variable: str
    k: int
    lr: float
    seed: int
    within: torch.Tensor | None = field(default=None, compare=False)
    support: str = "location"
    boundless: bool = False  # Boundless DAS: k is the room (a full rotation) and the size is learned

    def room(self, width: int) -> int:
        return width if self.within is None else self.within.shape[1]


@dataclass(frozen=True)
class Boundless:
    """Boundless DAS training settings: the penalty on each boundary b (added to the cell's loss), the
    temperature annealed linearly from ``start`` to ``end`` over training, and b's starting value."""

    penalty: float = 0.1
    start: float = 50.0
    end: float = 0.1
    initial: float = 0.5


def boundary_weights(boundary: torch.Tensor, room: int, temperature: float) -> torch.Tensor:
    """Soft weights (..., room) on a rotation's directions for boundaries (...,) in (0, 1]: about 1 on the
    first ``boundary * room`` directions and 0 after; all 1 when the boundary is at 1 and T is small."""
    edge = boundary.clamp(1.0 / room, 1.0)[..., None] * room
    return torch.sigmoid((edge - torch.arange(room, dtype=boundary.dtype) - 0.5) / temperature)


def boundary_size(boundary: float, room: int) -> int:
    """The dimension a trained boundary selects: round(b x room), within 1..room."""
    return max(1, min(room, round(boundary * room)))


def initial_rotation(width: int, k: int, seed: int, within: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded starting point (parameters X (r x k), base (r x r)) of a k-dimensional subspace of a
    width-d activation (r = d, or the support's size): torch's orthogonal parametrization of a
    freshly initialized ``Linear(k, r)``, so the same seed gives the same start as a plain per-cell DAS."""
    room = width if within is None else within.shape[1]
    if not 1 <= k <= room:
        raise ValueError(f"DAS dimension k={k} must be in 1..{room}")
    torch.manual_seed(seed)
    layer = orthogonal(nn.Linear(k, room, bias=False))
    return layer.parametrizations.weight.original.detach().clone(), layer.parametrizations.weight[0].base.detach().clone()


def orthonormal(x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Orthonormal (..., r, k) matrices from parameters x (..., r, k) and fixed bases (..., r, r), batched
    over the leading dimensions: torch's orthogonal map with trivialization (base times a product of
    Householder reflections for k < r, the exponential of a skew-symmetric matrix for k = r).

    The reflections' product is formed in its compact WY form, ``I - V T V^T`` with T^-1 the upper
    triangle of V^T V (diagonal 1 / tau), so its gradient is a few batched products and one triangular
    solve instead of a loop over the k reflections (torch's own householder_product backward)."""
    room, k = x.shape[-2:]
    if room == k:
        lower = x.tril()
        q = torch.matrix_exp(lower - lower.mT)
    else:
        eye = torch.eye(room, k, dtype=x.dtype, device=x.device)
        reflectors = x.tril(diagonal=-1) + eye  # unit diagonal, as LAPACK stores them
        tau = 2.0 / (reflectors * reflectors).sum(dim=-2)
        t_inverse = (reflectors.mT @ reflectors).triu(diagonal=1) + torch.diag_embed(1.0 / tau)
        q = eye - reflectors @ torch.linalg.solve_triangular(t_inverse, reflectors[..., :k, :].mT, upper=True)
        q = q * x.diagonal(dim1=-2, dim2=-1).int().unsqueeze(-2)  # signs of the fixed diagonal, as torch does
    return base @ q


def random_subspace(width: int, k: int, seed: int, within: torch.Tensor | None = None) -> torch.Tensor:
    """The untrained starting subspace Q (d x k) of a cell with this seed."""
    q = orthonormal(*initial_rotation(width, k, seed, within))
    return q if within is None else within @ q


@dataclass
class _Group:
    """Cells of one shape (room, k) and support kind: each keeps its own parameters, stacked into one
    batched orthogonal map per step."""

    members: list[int]
    params: list[nn.Parameter]
    bases: torch.Tensor
    within: torch.Tensor | None
    boundaries: list[nn.Parameter] | None = None  # Boundless DAS cells: one b per member

    def subspaces(self) -> torch.Tensor:
        q = orthonormal(torch.stack(self.params), self.bases)
        return q if self.within is None else self.within @ q


def _groups(cells: Sequence[Cell], width: int, boundless: Boundless) -> list[_Group]:
    keys: dict[tuple, list[int]] = {}
    for i, cell in enumerate(cells):
        keys.setdefault((cell.room(width), cell.k, cell.within is None, cell.boundless), []).append(i)
    groups = []
    for (_, _, _, is_boundless), members in keys.items():
        starts = [initial_rotation(width, cells[i].k, cells[i].seed, cells[i].within) for i in members]
        within = None if cells[members[0]].within is None else torch.stack([cells[i].within for i in members])
        boundaries = [nn.Parameter(torch.tensor(boundless.initial)) for _ in members] if is_boundless else None
        groups.append(_Group(members, [nn.Parameter(x) for x, _ in starts], torch.stack([b for _, b in starts]), within, boundaries))
    return groups


def train_rotations(backbone: nn.Module, bank: CachedBank, location: str, cells: Sequence[Cell],
                    epochs: int, batch_size: int, max_rows: int | None = None,
                    boundless: Boundless = Boundless()) -> list[torch.Tensor]:
    """Fit every cell's Q at ``location`` on ``bank`` (the DAS training bank) against its variable's
    counterfactual labels; returns one Q (d x k) per cell, in order (a Boundless cell's k is the size it
    learned). Cells are trained together, at most ``max_rows`` stacked rows per forward (default: the
    backbone's ``max_batch_rows``); each chunk of cells is an independent training, so the chunking
    changes no result."""
    per_chunk = max(1, (max_rows or getattr(backbone, "max_batch_rows", 65536)) // batch_size)
    out: list[torch.Tensor] = []
    for start in range(0, len(cells), per_chunk):
        out += _train_together(backbone, bank, location, cells[start:start + per_chunk], epochs, batch_size, boundless)
    return out


def _train_together(backbone: nn.Module, bank: CachedBank, location: str, cells: Sequence[Cell],
                    epochs: int, batch_size: int, boundless: Boundless) -> list[torch.Tensor]:
    h_base, h_source = bank.acts("base", location), bank.acts("source", location)
    x = bank.inputs_at(backbone, location)
    n, width = h_base.shape[0], h_base.shape[-1]
    groups = _groups(cells, width, boundless)
    trained: list[torch.Tensor | None] = [None] * len(cells)
    # a DAS cell whose k fills its room projects onto the whole room whatever its rotation (Q Q^T is the
    # identity there), so training could not change its intervention: it keeps its starting subspace
    fills = [g.boundaries is None and cells[g.members[0]].k == cells[g.members[0]].room(width) for g in groups]
    _collect([g for g, f in zip(groups, fills) if f], trained)
    groups = [g for g, f in zip(groups, fills) if not f]
    if not groups:
        return trained  # type: ignore[return-value]
    order = [i for g in groups for i in g.members]  # the stacked rows follow the groups
    by_lr: dict[float, list[nn.Parameter]] = {}
    for g in groups:
        for j, (i, p) in enumerate(zip(g.members, g.params)):
            by_lr.setdefault(cells[i].lr, []).extend([p] if g.boundaries is None else [p, g.boundaries[j]])
    optimizer = torch.optim.Adam([{"params": ps, "lr": lr} for lr, ps in by_lr.items()], foreach=True)
    labels = torch.stack([bank.labels(cells[i].variable) for i in order])
    generators = [torch.Generator().manual_seed(cells[i].seed) for i in order]
    loss_fn = bank.task.readout.loss
    steps, step = epochs * -(-n // batch_size), 0
    for epoch in range(epochs):
        batches = zip(*(torch.randperm(n, generator=g).split(batch_size) for g in generators))
        for rows in batches:
            temperature = boundless.start + (boundless.end - boundless.start) * step / max(steps - 1, 1)
            idx = torch.stack(rows)  # (cells, batch): each cell's own minibatch
            patched, penalty, at = [], 0.0, 0
            for g in groups:
                part = idx[at:at + len(g.members)]
                weights = None
                if g.boundaries is not None:
                    b = torch.stack(list(g.boundaries))
                    weights = boundary_weights(b, g.params[0].shape[0], temperature).unsqueeze(-2)
                    penalty = penalty + boundless.penalty * b.sum()
                patched.append(interchange(h_base[part], h_source[part], Subspace(basis=g.subspaces(), weights=weights).project))
                at += len(g.members)
            flat = torch.cat(patched).reshape(-1, width)
            logits = backbone.resume(location, flat, x[idx.reshape(-1)])
            # the mean over all stacked rows times the number of cells is the sum of each cell's own mean
            # loss, so each cell's parameters get exactly its own gradient (and its own boundary penalty)
            loss = loss_fn(logits, labels.gather(1, idx).reshape(-1)) * len(order) + penalty
            step += 1
            if not torch.isfinite(loss):
                raise FloatingPointError(f"DAS loss became {loss.item()} at {location} "
                                         f"(cells k={sorted({c.k for c in cells})}, lr={sorted({c.lr for c in cells})})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        log.info("DAS at %s: epoch %d/%d done for %d cells (summed loss %.4f)", location, epoch + 1, epochs, len(order), loss.item())
    _collect(groups, trained)
    return trained  # type: ignore[return-value]


@torch.no_grad()
def _collect(groups: Sequence[_Group], trained: list) -> None:
    """Each group's current subspaces into ``trained``, at their cells' places (a Boundless cell's first
    directions, as many as its boundary selects)."""
    for g in groups:
        for j, (i, q) in enumerate(zip(g.members, g.subspaces())):
            k = q.shape[-1] if g.boundaries is None else boundary_size(float(g.boundaries[j]), q.shape[-1])
            trained[i] = q[:, :k].contiguous()


@torch.no_grad()
def evaluate_rotations(backbone: nn.Module, bank: CachedBank, location: str, variables: Sequence[str],
                       subspaces: Sequence[torch.Tensor]) -> list[dict[str, float]]:
    """IIA of each DAS intervention Q at ``location`` for its variable on ``bank``, many per forward."""
    logits = sweep_single_sites(backbone, location, bank.acts("base", location), bank.acts("source", location),
                                [Subspace(basis=q) for q in subspaces], bank.inputs_at(backbone, location))
    predict = bank.task.readout.predict
    return [iia(predict(out), bank.labels(v), bank.sensitive(v)) for v, out in zip(variables, logits)]


def evaluate_rotation(backbone: nn.Module, bank: CachedBank, location: str, variable: str, q: torch.Tensor) -> dict[str, float]:
    """IIA of the DAS intervention Q at ``location`` on ``bank``."""
    return evaluate_rotations(backbone, bank, location, [variable], [q])[0]


def dimension_hint(size: int, factors: list[float]) -> list[int]:
    """The k grid suggested by a localized support of ``size`` dimensions (docs/method.md §6): size x each
    factor, rounded, kept within 1..size."""
    return sorted({min(size, max(1, round(size * f))) for f in factors})
