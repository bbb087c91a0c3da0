"""Distributed Alignment Search: one low-rank orthonormal implementation (METHOD.md 6).

The intervention is ``h <- h + Q Q^T (h_source - h)`` with Q (d x k) orthonormal through torch's
orthogonal parametrization. ``within`` (d x r, orthonormal) restricts Q to a support (native
coordinates or a PCA span): Q = within @ Q'. Training uses cached base and source activations at the
site and runs only the layers after it, with the backbone frozen.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from plotlib.cache import CachedBank
from plotlib.metrics import iia
from plotlib.patching import Edit, Subspace, run_with_edits
from plotlib.sites import Location


class Rotation(nn.Module):
    """A trainable k-dimensional orthonormal subspace of a width-d activation (optionally inside ``within``)."""

    def __init__(self, width: int, k: int, within: torch.Tensor | None = None) -> None:
        super().__init__()
        room = width if within is None else within.shape[1]
        if not 1 <= k <= room:
            raise ValueError(f"DAS dimension k={k} must be in 1..{room}")
        self.register_buffer("within", within if within is not None else torch.empty(0))
        self.inner = orthogonal(nn.Linear(k, room, bias=False))

    def basis(self) -> torch.Tensor:
        q = self.inner.weight
        return q if self.within.numel() == 0 else self.within @ q


def train_rotation(
    backbone: nn.Module, bank: CachedBank, layer: str, variable: str, k: int, lr: float,
    epochs: int, batch_size: int, seed: int, within: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fit Q on ``bank`` (the DAS training bank) against the counterfactual labels; returns Q (d x k)."""
    torch.manual_seed(seed)
    h_base, h_source = bank.acts("base", layer), bank.acts("source", layer)
    labels, x = bank.labels(variable), bank.inputs_at(backbone, layer)
    rotation = Rotation(h_base.shape[-1], k, within)
    optimizer = torch.optim.Adam(rotation.parameters(), lr=lr)
    loss_fn = bank.task.readout.loss
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(labels), generator=generator).split(batch_size):
            q = rotation.basis()
            patched = h_base[idx] + ((h_source[idx] - h_base[idx]) @ q) @ q.T
            loss = loss_fn(backbone.resume(layer, patched, x[idx]), labels[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"DAS loss became {loss.item()} at {layer} (k={k}, lr={lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return rotation.basis().detach()


@torch.no_grad()
def evaluate_rotation(backbone: nn.Module, bank: CachedBank, layer: str, variable: str, q: torch.Tensor) -> dict[str, float]:
    """IIA of the DAS intervention Q at ``layer`` on ``bank``."""
    edit = Edit(Location.parse(layer), Subspace(basis=q), 1.0, bank.acts("source", layer))
    logits = run_with_edits(backbone, bank.inputs_at(backbone, layer), [edit], bank.base_acts([layer]))
    return iia(bank.task.readout.predict(logits), bank.labels(variable), bank.sensitive(variable))


def dimension_hint(size: int, factors: list[float]) -> list[int]:
    """The k grid suggested by a localized support of ``size`` dimensions (METHOD.md 6): size x each
    factor, rounded, kept within 1..size."""
    return sorted({min(size, max(1, round(size * f))) for f in factors})
