"""Planted ground truth: MLPs built by hand from the seed, whose target variables are computed in a known
set of units at a known layer, so a method's localization can be checked against the answer.

The task is sum equality over digits W, X, Y, Z in 0..m-1 (one-hot inputs): O = (W + X) == (Y + Z),
with targets S1 = W + X and S2 = Y + Z. Both sums are linear in the inputs, so the first hidden layer
computes them exactly, and no layer before it could hold them:

- layer 1 (the planted layer): each target in ``planted_units`` units (a random positive scale times the
  sum), ``decoys`` units per target carrying an exact copy whose outgoing weight is ``decoy_strength``
  times a planted unit's, and ``planted_units`` units per distractor (W + Y, X + Z, ...) that nothing reads;
- layer 2 reads s_k (each sum restored from its planted units and decoys) into relu(s1 - s2) and
  relu(s2 - s1); layer 3 into e = relu(1 - p (relu(s1 - s2) + relu(s2 - s1))) with p = planted_units,
  which is O (steep enough that swapping one planted unit alone can break an equality); later layers
  carry e; the logits are +-logit_scale * (2e - 1).

Every other unit is filler: a random nonnegative feature of the layer below that no later unit reads.
Units sit at seeded random positions. With ``rotated`` the planted layer holds R v + c instead of its
native vector v (R a seeded random rotation, c a constant above |R v|, so the ReLU never clips: every
pre-activation of that layer is nonnegative by construction), and layer 2 reads R^T (h - c): each
variable then lives in a distributed subspace (the columns of R at its units).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from plotlib.backbones import MLP
from plotlib.causal import CausalModel
from plotlib.readout import SoftmaxReadout
from plotlib.sites import Location
from plotlib.tasks import Task, register_task

INPUTS = ("W", "X", "Y", "Z")
PAIRS = {"S1": ("W", "X"), "S2": ("Y", "Z")}
#: Input pairs of the distractor sums, in the order they are added.
DISTRACTOR_PAIRS = (("W", "Y"), ("X", "Z"), ("W", "Z"), ("X", "Y"))


@dataclass(frozen=True)
class Planted:
    """Where a variable was planted: its location, and orthonormal columns (width, n) spanning its planted
    units and its decoys there (unit vectors, or columns of the rotation)."""

    location: str
    units: torch.Tensor
    decoys: torch.Tensor


@register_task("planted_mlp")
class PlantedMLP(Task):
    """Sum equality on a constructed MLP (``backbone.kind: constructed``) with known answers."""

    targets = ("S1", "S2")
    readout = SoftmaxReadout(2)

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        super().__init__(options, seed)
        self.m = int(options.get("digits", 5))
        self.width = int(options.get("width", 24))
        self.depth = int(options.get("depth", 3))
        self.n_planted = int(options.get("planted_units", 3))
        self.n_decoys = int(options.get("decoys", 2))
        self.decoy_strength = float(options.get("decoy_strength", 0.01))
        self.n_distractors = int(options.get("distractors", 1))
        self.rotated = bool(options.get("rotated", False))
        self.logit_scale = float(options.get("logit_scale", 4.0))
        self._check_options()
        self.causal_model = CausalModel(
            inputs=INPUTS, parents={"S1": ("W", "X"), "S2": ("Y", "Z"), "O": ("S1", "S2")},
            mechanisms={"S1": lambda w, x: w + x, "S2": lambda y, z: y + z, "O": lambda a, b: a == b}, output="O")
        self._build(np.random.default_rng([seed, 4099]))

    def _check_options(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ValueError(f"planted_mlp task_options.{key}: {what}")

        need(self.m >= 2, "digits", f"{self.m} must be at least 2")
        need(self.depth >= 3, "depth", f"{self.depth} must be at least 3 (planted layer, differences, equality)")
        need(self.n_planted >= 1, "planted_units", "must be at least 1")
        need(self.n_decoys >= 0 and self.decoy_strength >= 0, "decoys", "decoys and decoy_strength must be >= 0")
        need(0 <= self.n_distractors <= len(DISTRACTOR_PAIRS), "distractors", f"must be in 0..{len(DISTRACTOR_PAIRS)}")
        planted = 2 * (self.n_planted + self.n_decoys) + self.n_distractors * self.n_planted
        need(self.width >= planted, "width", f"{self.width} is too small: the planted layer needs {planted} units")

    # --- inputs and pairs --------------------------------------------------------------------------

    def sample_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        """Uniform digits, except that on half the rows Y is drawn among the values that let Y + Z equal
        W + X (and Z set so it does): O is balanced."""
        w, x, y = (rng.integers(0, self.m, n) for _ in range(3))
        total = w + x
        low, high = np.maximum(0, total - (self.m - 1)), np.minimum(self.m - 1, total)
        equal = rng.random(n) < 0.5
        y = np.where(equal, low + (rng.random(n) * (high - low + 1)).astype(np.int64), y)
        z = np.where(equal, total - y, rng.integers(0, self.m, n))
        return pd.DataFrame({"W": w, "X": x, "Y": y, "Z": z})

    def sample_pairs(self, rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """Independent bases and sources: each sum differs on most pairs and changes the output on many."""
        return self.sample_inputs(rng, n), self.sample_inputs(rng, n), ["random"] * n

    def outputs(self, inputs: pd.DataFrame, interventions: dict[str, Any] | None = None) -> np.ndarray:
        """Vectorized: the mechanisms are elementwise, so whole columns run at once."""
        columns = {c: inputs[c].to_numpy() for c in INPUTS}
        return self.causal_model.run(columns, interventions)["O"].astype(np.int64)

    def encode(self, inputs: pd.DataFrame) -> torch.Tensor:
        digits = torch.tensor(inputs[list(INPUTS)].to_numpy(np.int64))
        return torch.nn.functional.one_hot(digits, self.m).reshape(len(inputs), -1).float()

    def label(self, output_value: Any) -> int:
        return int(bool(output_value))

    # --- construction ----------------------------------------------------------------------------

    def _build(self, rng: np.random.Generator) -> None:
        """Weights (native coordinates) of every layer, unit positions, and the planted layer's rotation."""
        m, w = self.m, self.width
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []

        def add_layer(rows: list[tuple[np.ndarray, float]], fan_in: int) -> list[int]:
            """One hidden layer: ``rows`` are the circuit units' (weights, bias); the rest are filler.
            Returns each circuit unit's position."""
            positions = rng.permutation(w)
            weight, bias = np.zeros((w, fan_in)), np.zeros(w)
            for unit, (row, b) in zip(positions, rows):
                weight[unit], bias[unit] = row, b
            for unit in positions[len(rows):]:
                weight[unit] = rng.uniform(0, 1, fan_in) / np.sqrt(fan_in)  # nonnegative: never clipped
                bias[unit] = rng.uniform(0, 0.5)
            self.weights.append(weight)
            self.biases.append(bias)
            return [int(u) for u in positions[:len(rows)]]

        def digit_sum(a: str, b: str, scale: float) -> np.ndarray:
            row = np.zeros(4 * m)
            for name in (a, b):
                row[INPUTS.index(name) * m:(INPUTS.index(name) + 1) * m] = scale * np.arange(m)
            return row

        # layer 1: planted units and decoys of each target, then the distractor sums
        roles, rows, scales = [], [], []
        pairs = [PAIRS["S1"], PAIRS["S2"], *DISTRACTOR_PAIRS[:self.n_distractors]]
        for p, pair in enumerate(pairs):
            for role in ["planted"] * self.n_planted + (["decoy"] * self.n_decoys if p < 2 else []):
                scales.append(rng.uniform(0.5, 1.5))
                rows.append((digit_sum(*pair, scales[-1]), 0.0))
                roles.append((p, role))
        where = add_layer(rows, 4 * m)
        self.planted_positions = {v: [u for u, (p, r) in zip(where, roles) if p == t and r == "planted"] for t, v in enumerate(self.targets)}
        self.decoy_positions = {v: [u for u, (p, r) in zip(where, roles) if p == t and r == "decoy"] for t, v in enumerate(self.targets)}
        # layer 2: s_k restored from planted units and decoys (s_k is the sum itself), as two differences
        reads = []
        total = self.n_planted + self.decoy_strength * self.n_decoys
        for t in range(2):
            row = np.zeros(w)
            for u, c, (p, role) in zip(where, scales, roles):
                if p == t:
                    row[u] = (1.0 if role == "planted" else self.decoy_strength) / (c * total)
            reads.append(row)
        up, down = add_layer([(reads[0] - reads[1], 0.0), (reads[1] - reads[0], 0.0)], w)
        # layer 3: e = relu(1 - p |s1 - s2|), which is O (the sums are integers); the steepness p lets one
        # planted unit's swap alone break an equality, as a variable's unit should; later layers carry e
        row = np.zeros(w)
        row[[up, down]] = -float(self.n_planted)
        (unit,) = add_layer([(row, 1.0)], w)
        for _ in range(4, self.depth + 1):
            (unit,) = add_layer([(np.eye(w)[unit], 0.0)], w)
        head = np.zeros((2, w))
        head[1, unit], head[0, unit] = 2 * self.logit_scale, -2 * self.logit_scale
        self.head = (head, np.array([self.logit_scale, -self.logit_scale]))
        self.rotation = np.eye(w)
        if self.rotated:
            self._rotate_planted_layer(rng)

    def _rotate_planted_layer(self, rng: np.random.Generator) -> None:
        """Layer 1 becomes h = R v + c (R orthogonal; c above the bound of |R v|, so the ReLU is the
        identity there); layer 2 reads R^T (h - c)."""
        q, r = np.linalg.qr(rng.standard_normal((self.width, self.width)))
        self.rotation = q * np.sign(np.diag(r))
        blocks = np.clip(self.weights[0], 0, None).reshape(self.width, 4, self.m)
        bound = blocks.max(axis=2).sum(axis=1) + np.clip(self.biases[0], 0, None)  # one digit per one-hot block
        shift = np.full(self.width, np.linalg.norm(bound) + 1.0)
        self.weights[0] = self.rotation @ self.weights[0]
        self.biases[0] = self.rotation @ self.biases[0] + shift
        readout = self.weights[1] @ self.rotation.T
        self.biases[1] = self.biases[1] - readout @ shift
        self.weights[1] = readout

    # --- the Task interface ------------------------------------------------------------------------

    def build_backbone(self, options: dict[str, Any], seed: int) -> torch.nn.Module:
        """The constructed MLP (no training: ``backbone.kind: constructed``)."""
        model = MLP(4 * self.m, [self.width] * self.depth, 2)
        with torch.no_grad():
            for layer, weight, bias in zip(model.layers, self.weights, self.biases):
                layer[0].weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
                layer[0].bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
            model.head.weight.copy_(torch.as_tensor(self.head[0], dtype=torch.float32))
            model.head.bias.copy_(torch.as_tensor(self.head[1], dtype=torch.float32))
        return model.eval().requires_grad_(False)

    def coarse_locations(self, backbone: torch.nn.Module) -> list[Location]:
        return [Location(name) for name in backbone.taps]

    def planted(self) -> dict[str, Planted]:
        """Each target's planted units and decoys in layer 1 (h1), as columns of the rotation."""
        rotation = torch.as_tensor(self.rotation, dtype=torch.float32)
        return {v: Planted("h1", rotation[:, self.planted_positions[v]].contiguous(),
                           rotation[:, self.decoy_positions[v]].contiguous()) for v in self.targets}
