"""Backbones with named activation taps.

Every backbone exposes ``taps``: identity modules whose outputs are the activations that sites
address (forward hooks on them read and write activations), and ``resume(layer, h, x)``, which
continues the forward pass from tap ``layer`` with activation ``h`` so a patch at layer l runs only
the layers after l. Hooks on later taps still fire during ``resume``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plotlib.io import atomic_path


class MLP(nn.Module):
    """ReLU MLP; tap ``h{i}`` is the post-activation output of hidden layer i (1-based)."""

    kind = "mlp"

    def __init__(self, d_in: int, hidden: list[int], d_out: int) -> None:
        super().__init__()
        self.args = {"d_in": d_in, "hidden": list(hidden), "d_out": d_out}
        dims = [d_in, *hidden]
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims, dims[1:]))
        self.taps = nn.ModuleDict({f"h{i + 1}": nn.Identity() for i in range(len(hidden))})
        self.head = nn.Linear(dims[-1], d_out)

    def width(self, layer: str) -> int:
        return self.args["hidden"][self._index(layer)]

    def _index(self, layer: str) -> int:
        names = list(self.taps)
        if layer not in names:
            raise KeyError(f"unknown MLP tap {layer!r}; taps are {names}")
        return names.index(layer)

    def _run(self, h: torch.Tensor, start: int) -> torch.Tensor:
        taps = list(self.taps.values())
        for i in range(start, len(self.layers)):
            h = taps[i](self.layers[i](h))
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, 0)

    def resume(self, layer: str, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(h, self._index(layer) + 1)


@dataclass(frozen=True)
class StepInputs:
    """GRU inputs (n, steps, d_in) with the head outputs of the steps before one tap computed once
    (:meth:`UnrolledGRU.resume_context`): a patch there cannot change them. Rows index and tile together."""

    x: torch.Tensor
    layer: str
    prefix: torch.Tensor  # (n, t * step_out): the per-step heads of the steps before ``layer``

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, idx) -> "StepInputs":
        return StepInputs(self.x[idx], self.layer, self.prefix[idx])

    def repeat_rows(self, k: int) -> "StepInputs":
        return StepInputs(self.x.repeat(k, 1, 1), self.layer, self.prefix.repeat(k, 1))


class UnrolledGRU(nn.Module):
    """A GRUCell unrolled over ``steps`` timesteps. Tap ``h{t}`` is the hidden state after reading
    step t; a per-step head reads each ``h{t}`` and a final head reads the last one, so the logits are
    ``steps * step_out + final_out`` wide (for binary addition: the sum bits, then the final carry)."""

    kind = "gru"

    def __init__(self, d_in: int, hidden: int, steps: int, step_out: int = 1, final_out: int = 1) -> None:
        super().__init__()
        self.args = {"d_in": d_in, "hidden": hidden, "steps": steps, "step_out": step_out, "final_out": final_out}
        self.cell = nn.GRUCell(d_in, hidden)
        self.taps = nn.ModuleDict({f"h{t}": nn.Identity() for t in range(steps)})
        self.step_head = nn.Linear(hidden, step_out)
        self.final_head = nn.Linear(hidden, final_out)

    def width(self, layer: str) -> int:
        self._index(layer)
        return self.args["hidden"]

    def _index(self, layer: str) -> int:
        names = list(self.taps)
        if layer not in names:
            raise KeyError(f"unknown GRU tap {layer!r}; taps are {names}")
        return names.index(layer)

    def _check(self, x: torch.Tensor) -> None:
        want = (self.args["steps"], self.args["d_in"])
        if x.dim() != 3 or tuple(x.shape[1:]) != want:
            raise ValueError(f"GRU input must have shape (batch, {want[0]}, {want[1]}), got {tuple(x.shape)}")

    def _run(self, x: torch.Tensor, h: torch.Tensor, start: int, step_logits: list[torch.Tensor]) -> torch.Tensor:
        taps = list(self.taps.values())
        for t in range(start, self.args["steps"]):
            h = taps[t](self.cell(x[:, t], h))
            step_logits.append(self.step_head(h))
        return torch.cat([*step_logits, self.final_head(h)], dim=-1)

    def forward(self, x: torch.Tensor | StepInputs) -> torch.Tensor:
        x = x.x if isinstance(x, StepInputs) else x
        self._check(x)
        return self._run(x, x.new_zeros(x.shape[0], self.args["hidden"]), 0, [])

    @torch.no_grad()
    def _prefix_heads(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The per-step head outputs of steps 0..t-1 on unpatched states (n, t * step_out)."""
        state, heads = x.new_zeros(x.shape[0], self.args["hidden"]), []
        for s in range(t):
            state = self.cell(x[:, s], state)
            heads.append(self.step_head(state))
        return torch.cat(heads, dim=-1) if heads else x.new_zeros(x.shape[0], 0)

    def resume_context(self, layer: str, x: torch.Tensor) -> StepInputs:
        """``x`` with the heads of the steps before ``layer`` computed once, so that every :meth:`resume`
        there (sweeps and DAS steps alike) runs only the steps from ``layer`` on."""
        self._check(x)
        return StepInputs(x, layer, self._prefix_heads(x, self._index(layer)))

    def resume(self, layer: str, h: torch.Tensor, x: torch.Tensor | StepInputs | None = None) -> torch.Tensor:
        """Continue from ``h`` at tap ``layer``. The heads of the earlier steps read unpatched states: they
        come from ``x``'s context for this layer, or are recomputed from ``x`` without gradient and hooks."""
        if x is None:
            raise ValueError("UnrolledGRU.resume needs the inputs x: later steps read them")
        t = self._index(layer)
        if isinstance(x, StepInputs) and x.layer == layer:
            x, prefix = x.x, x.prefix
        else:
            x = x.x if isinstance(x, StepInputs) else x
            self._check(x)
            prefix = self._prefix_heads(x, t)
        return self._run(x, h, t + 1, [prefix, self.step_head(h)])


BACKBONES: dict[str, type[nn.Module]] = {"mlp": MLP, "gru": UnrolledGRU}


def save_backbone(model: nn.Module, path: str | os.PathLike) -> None:
    """Write constructor arguments and weights together, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"kind": model.kind, "args": model.args, "state": model.state_dict()}, tmp)


def load_backbone(path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint written by :func:`save_backbone`; the model comes back frozen, in eval mode."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"backbone checkpoint not found: {path}")
    blob: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("kind") not in BACKBONES:
        raise ValueError(f"{path}: unknown backbone kind {blob.get('kind')!r}; known: {sorted(BACKBONES)}")
    model = BACKBONES[blob["kind"]](**blob["args"])
    model.load_state_dict(blob["state"])
    model.eval().requires_grad_(False)
    return model
