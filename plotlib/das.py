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

Two kinds of cell learn their size instead of taking k from the grid (``Cell.mask``), each with a
temperature T annealed linearly over training and a penalty on the fraction of the room it uses:
- ``boundary``, Boundless DAS (Wu et al. 2023): a full rotation R of the room and a boundary b in (0, 1]
  that weights R's direction i by ``sigmoid((b * room - i - 1/2) / T)``; its answer is R's first
  round(b x room) directions;
- ``units``, DBM (a learned mask over native units): no rotation, unit i weighted by ``sigmoid(l_i / T)``;
  its answer is the units with l_i > 0 (the strongest one if none).
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
from plotlib.patching import Subspace, forward_rows, interchange, sweep_single_sites

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
    mask: str | None = None  # "boundary" (Boundless DAS) or "units" (DBM): k is the room, the size is learned

    def room(self, width: int) -> int:
        return width if self.within is None else self.within.shape[1]


@dataclass(frozen=True)
class MaskSchedule:
    """Settings of the cells that learn their size (Boundless DAS, DBM): the penalty on the fraction of
    the room a cell uses (added to its loss), the temperature annealed linearly from ``start`` to ``end``
    over training, and a boundary's starting value (DBM's unit logits start at 0)."""

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


def kept_units(logits: torch.Tensor) -> torch.Tensor:
    """The units a trained DBM mask keeps: those with a positive logit, or the strongest one if none."""
    kept = torch.nonzero(logits > 0).flatten()
    return kept if len(kept) else logits.argmax().reshape(1)


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
    """Cells of one shape (room, k), support kind and mask kind: each keeps its own parameters (rotation
    parameters, or a DBM cell's unit logits), stacked into one batched map per step."""

    members: list[int]
    params: list[nn.Parameter]
    bases: torch.Tensor | None
    within: torch.Tensor | None
    mask: str | None = None
    boundaries: list[nn.Parameter] | None = None  # Boundless DAS cells: one b per member

    @property
    def trainable(self) -> list[list[nn.Parameter]]:
        """Each member's parameters (a Boundless cell's boundary beside its rotation's)."""
        if self.boundaries is None:
            return [[p] for p in self.params]
        return [[p, b] for p, b in zip(self.params, self.boundaries)]

    def subspaces(self) -> torch.Tensor:
        if self.mask == "units":  # native units: the identity of the room
            room = self.params[0].shape[0]
            q = torch.eye(room).expand(len(self.members), room, room)
        else:
            q = orthonormal(torch.stack(self.params), self.bases)
        return q if self.within is None else self.within @ q

    def weights(self, temperature: float) -> torch.Tensor | None:
        """Soft weights (members, room) on the directions, for the cells that learn their size."""
        if self.mask == "boundary":
            return boundary_weights(torch.stack(list(self.boundaries)), self.params[0].shape[0], temperature)
        if self.mask == "units":
            return torch.sigmoid(torch.stack(self.params) / temperature)
        return None

    def answers(self) -> list[torch.Tensor]:
        """Each member's subspace: the trained one, or what its learned mask keeps."""
        out = []
        for j, q in enumerate(self.subspaces()):
            if self.mask == "boundary":
                q = q[:, :boundary_size(float(self.boundaries[j]), q.shape[-1])]
            elif self.mask == "units":
                q = q[:, kept_units(self.params[j].detach())]
            out.append(q.contiguous())
        return out


def _groups(cells: Sequence[Cell], width: int, schedule: MaskSchedule) -> list[_Group]:
    keys: dict[tuple, list[int]] = {}
    for i, cell in enumerate(cells):
        keys.setdefault((cell.room(width), cell.k, cell.within is None, cell.mask), []).append(i)
    groups = []
    for (room, _, _, mask), members in keys.items():
        within = None if cells[members[0]].within is None else torch.stack([cells[i].within for i in members])
        if mask == "units":
            groups.append(_Group(members, [nn.Parameter(torch.zeros(room)) for _ in members], None, within, mask))
            continue
        params, bases = [], torch.empty(len(members), room, room)
        for j, i in enumerate(members):  # filled in place: the (room x room) bases are not held twice
            x, bases[j] = initial_rotation(width, cells[i].k, cells[i].seed, cells[i].within)
            params.append(nn.Parameter(x))
        boundaries = [nn.Parameter(torch.tensor(schedule.initial)) for _ in members] if mask == "boundary" else None
        groups.append(_Group(members, params, bases, within, mask, boundaries))
    return groups


#: the most values the (room x room) rotation bases of the cells trained together may hold (256 MB in float32)
BASE_VALUES = 2 ** 26


def train_rotations(backbone: nn.Module, bank: CachedBank, location: str, cells: Sequence[Cell],
                    epochs: int, batch_size: int, max_rows: int | None = None,
                    schedule: MaskSchedule = MaskSchedule()) -> list[torch.Tensor]:
    """Fit every cell's Q at ``location`` on ``bank`` (the DAS training bank) against its variable's
    counterfactual labels; returns one Q (d x k) per cell, in order (a Boundless cell's k is the size it
    learned). Cells are trained together, at most ``max_rows`` stacked rows per forward (default: the
    backbone's, :func:`plotlib.patching.forward_rows`) and at most BASE_VALUES in their rotations' bases;
    each chunk of cells is an independent training, so the chunking changes no result."""
    per_chunk = max(1, (max_rows or forward_rows(backbone, bank.x_base)) // batch_size)
    # each rotation keeps a fixed (room x room) base: wide rooms train fewer cells at a time
    room = max(c.room(bank.acts("base", location).shape[-1]) for c in cells) if cells else 1
    per_chunk = min(per_chunk, max(1, BASE_VALUES // room ** 2))
    out: list[torch.Tensor] = []
    for start in range(0, len(cells), per_chunk):
        out += _train_together(backbone, bank, location, cells[start:start + per_chunk], epochs, batch_size, schedule)
    return out


def _train_together(backbone: nn.Module, bank: CachedBank, location: str, cells: Sequence[Cell],
                    epochs: int, batch_size: int, schedule: MaskSchedule) -> list[torch.Tensor]:
    h_base, h_source = bank.acts("base", location), bank.acts("source", location)
    x = bank.inputs_at(backbone, location)
    n, width = h_base.shape[0], h_base.shape[-1]
    groups = _groups(cells, width, schedule)
    trained: list[torch.Tensor | None] = [None] * len(cells)
    # a DAS cell whose k fills its room projects onto the whole room whatever its rotation (Q Q^T is the
    # identity there), so training could not change its intervention: it keeps its starting subspace
    fills = [g.mask is None and cells[g.members[0]].k == cells[g.members[0]].room(width) for g in groups]
    _collect([g for g, f in zip(groups, fills) if f], trained)
    groups = [g for g, f in zip(groups, fills) if not f]
    if not groups:
        return trained  # type: ignore[return-value]
    order = [i for g in groups for i in g.members]  # the stacked rows follow the groups
    by_lr: dict[float, list[nn.Parameter]] = {}
    for g in groups:
        for i, params in zip(g.members, g.trainable):
            by_lr.setdefault(cells[i].lr, []).extend(params)
    optimizer = torch.optim.Adam([{"params": ps, "lr": lr} for lr, ps in by_lr.items()], foreach=True)
    labels = torch.stack([bank.labels(cells[i].variable) for i in order])
    generators = [torch.Generator().manual_seed(cells[i].seed) for i in order]
    loss_fn = bank.task.readout.loss
    steps, step = epochs * -(-n // batch_size), 0
    for epoch in range(epochs):
        batches = zip(*(torch.randperm(n, generator=g).split(batch_size) for g in generators))
        for rows in batches:
            temperature = schedule.start + (schedule.end - schedule.start) * step / max(steps - 1, 1)
            idx = torch.stack(rows)  # (cells, batch): each cell's own minibatch
            patched, penalty, at = [], 0.0, 0
            for g in groups:
                part = idx[at:at + len(g.members)]
                weights = g.weights(temperature)
                if weights is not None:  # the fraction of the room each cell uses, penalized
                    penalty = penalty + schedule.penalty * weights.mean(-1).sum()
                    weights = weights.unsqueeze(-2)
                patched.append(interchange(h_base[part], h_source[part], Subspace(basis=g.subspaces(), weights=weights).project))
                at += len(g.members)
            flat = torch.cat(patched).reshape(-1, width)
            logits = backbone.resume(location, flat, x[idx.reshape(-1)])
            # the mean over all stacked rows times the number of cells is the sum of each cell's own mean
            # loss, so each cell's parameters get exactly its own gradient (and its own mask penalty)
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
    """Each group's current subspaces into ``trained``, at their cells' places (for a cell that learns its
    size, the directions its mask keeps)."""
    for g in groups:
        for i, q in zip(g.members, g.answers()):
            trained[i] = q


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
