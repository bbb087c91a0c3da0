"""Planted ground truth: MLPs built by hand from the seed, whose target variables are computed in a known
set of units at a known layer, so a method's localization can be checked against the answer.

The task is hierarchical equality over one-hot entities, O = (W == X) == (Y == Z):

- layer 1 holds equality detectors, unit i of pair (A, B) = relu(A_i + B_i - 1), one per entity, for
  the targets WX, YZ and for ``distractors`` further pairs (W == Y, X == Z, ...) that nothing reads;
- layers 2 .. planted_layer - 1 carry the detectors unchanged;
- the planted layer computes each target in ``planted_units`` units (value: a random scale times the
  variable), ``decoys`` units per target carrying an exact copy of it whose outgoing weight is
  ``decoy_strength`` times a planted unit's, and ``planted_units`` units per distractor;
- the next layer reads s_V (each target restored to 0/1 from its planted units and decoys) into
  a = relu(s_WX + s_YZ - 1) and b = relu(1 - s_WX - s_YZ); later layers carry a and b; the logits are
  +-logit_scale * (a + b - 1/2).

Every other unit is filler: a random feature of the layer below that no later unit reads. Units sit at
seeded random positions. With ``rotated`` the planted layer holds R v + c instead of its native vector v
(R a seeded random rotation, c a constant large enough that the ReLU never clips), and the next layer
reads R^T: each variable then lives in a distributed subspace (the columns of R at its units).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from plotlib.backbones import MLP
from plotlib.sites import Location
from plotlib.tasks import register_task
from plotlib.tasks.hierarchical_equality import HierarchicalEquality

#: Input pairs of the distractor variables, in the order they are added.
DISTRACTOR_PAIRS = (("W", "Y"), ("X", "Z"), ("W", "Z"), ("X", "Y"))
PAIRS = {"WX": ("W", "X"), "YZ": ("Y", "Z")}
INPUTS = ("W", "X", "Y", "Z")


@dataclass(frozen=True)
class Planted:
    """Where a variable was planted: its location, and orthonormal columns (width, n) spanning its planted
    units and its decoys there (unit vectors, or columns of the rotation)."""

    location: str
    units: torch.Tensor
    decoys: torch.Tensor


@register_task("planted_mlp")
class PlantedMLP(HierarchicalEquality):
    """Hierarchical equality on a constructed MLP (``backbone.kind: constructed``) with known answers."""

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        super().__init__({"n_entities": options.get("n_entities", 6)}, seed)
        self.entity_dim = self.n_entities
        self.entities = torch.eye(self.n_entities)  # one-hot entities
        self.width = int(options.get("width", 24))
        self.depth = int(options.get("depth", 3))
        self.planted_layer = int(options.get("planted_layer", 2))
        self.n_planted = int(options.get("planted_units", 3))
        self.n_decoys = int(options.get("decoys", 2))
        self.decoy_strength = float(options.get("decoy_strength", 0.01))
        self.n_distractors = int(options.get("distractors", 1))
        self.rotated = bool(options.get("rotated", False))
        self.logit_scale = float(options.get("logit_scale", 4.0))
        self._check_options()
        self._build(np.random.default_rng([seed, 4099]))

    def _check_options(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ValueError(f"planted_mlp task_options.{key}: {what}")

        need(self.depth >= 3, "depth", f"{self.depth} must be at least 3 (detectors, planted layer, readout)")
        need(2 <= self.planted_layer <= self.depth - 1, "planted_layer", f"{self.planted_layer} must be in 2..depth-1 ({self.depth - 1})")
        need(self.n_planted >= 1, "planted_units", "must be at least 1")
        need(self.n_decoys >= 0 and self.decoy_strength >= 0, "decoys", "decoys and decoy_strength must be >= 0")
        need(0 <= self.n_distractors <= len(DISTRACTOR_PAIRS), "distractors", f"must be in 0..{len(DISTRACTOR_PAIRS)}")
        detectors = self.n_entities * (2 + self.n_distractors)
        planted = 2 * (self.n_planted + self.n_decoys) + self.n_distractors * self.n_planted
        need(self.width >= max(detectors, planted), "width",
             f"{self.width} is too small: the detectors need {detectors} units and the planted layer {planted}")

    # --- construction ----------------------------------------------------------------------------

    def _build(self, rng: np.random.Generator) -> None:
        """Weights (native coordinates) of every layer, unit positions, and the planted layer's rotation."""
        n, w = self.n_entities, self.width
        d_in = 4 * n
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []

        def add_layer(rows: dict[int, tuple[np.ndarray, float]], fan_in: int) -> dict:
            """One hidden layer: ``rows`` maps circuit units (logical index) to (weights, bias); the
            rest are filler. Returns the position of each logical unit."""
            positions = rng.permutation(w)
            weight, bias = np.zeros((w, fan_in)), np.zeros(w)
            for logical, (row, b) in rows.items():
                weight[positions[logical]], bias[positions[logical]] = row, b
            for logical in range(len(rows), w):
                weight[positions[logical]] = rng.uniform(0, 1, fan_in) / np.sqrt(fan_in)  # nonnegative: no clipping
                bias[positions[logical]] = rng.uniform(0, 0.5)
            self.weights.append(weight)
            self.biases.append(bias)
            return {logical: int(positions[logical]) for logical in range(w)}

        # layer 1: equality detectors of the targets, then of the distractor pairs
        pairs = [PAIRS["WX"], PAIRS["YZ"], *DISTRACTOR_PAIRS[:self.n_distractors]]
        rows = {}
        for p, (a, b) in enumerate(pairs):
            for i in range(n):
                row = np.zeros(d_in)
                row[INPUTS.index(a) * n + i] = row[INPUTS.index(b) * n + i] = 1.0
                rows[p * n + i] = (row, -1.0)
        where = add_layer(rows, d_in)
        detector = {p: [where[p * n + i] for i in range(n)] for p in range(len(pairs))}
        # carry the detectors to the planted layer
        for _ in range(2, self.planted_layer):
            flat = [u for p in range(len(pairs)) for u in detector[p]]
            where = add_layer({j: (np.eye(w)[u], 0.0) for j, u in enumerate(flat)}, w)
            detector = {p: [where[p * n + i] for i in range(n)] for p in range(len(pairs))}
        # planted layer: planted units, decoys, distractor units (each: a random scale times the variable)
        rows, logical, self._roles = {}, 0, {}
        scale = {}
        for p in range(len(pairs)):
            roles = ["planted"] * self.n_planted + (["decoy"] * self.n_decoys if p < 2 else [])
            for role in roles:
                c = rng.uniform(0.5, 1.5)
                row = np.zeros(w)
                row[detector[p]] = c
                rows[logical], scale[logical] = (row, 0.0), c
                self._roles[logical] = (p, role)
                logical += 1
        where = add_layer(rows, w)
        self.planted_positions = {v: [where[j] for j, (p, r) in self._roles.items() if p == t and r == "planted"]
                                  for t, v in enumerate(self.targets)}
        self.decoy_positions = {v: [where[j] for j, (p, r) in self._roles.items() if p == t and r == "decoy"]
                                for t, v in enumerate(self.targets)}
        # readout layer: s_V = planted and decoy contributions, normalized so s_V is the variable itself
        s_rows = []
        for t in range(2):
            row = np.zeros(w)
            total = self.n_planted + self.decoy_strength * self.n_decoys
            for j, (p, role) in self._roles.items():
                if p == t:
                    row[where[j]] = (1.0 if role == "planted" else self.decoy_strength) / (scale[j] * total)
            s_rows.append(row)
        both, neither = s_rows[0] + s_rows[1], -(s_rows[0] + s_rows[1])
        where = add_layer({0: (both, -1.0), 1: (neither, 1.0)}, w)
        circuit = [where[0], where[1]]
        for _ in range(self.planted_layer + 2, self.depth + 1):
            where = add_layer({0: (np.eye(w)[circuit[0]], 0.0), 1: (np.eye(w)[circuit[1]], 0.0)}, w)
            circuit = [where[0], where[1]]
        head = np.zeros((2, w))
        head[1, circuit] = 2 * self.logit_scale
        head[0, circuit] = -2 * self.logit_scale
        self.head = (head, np.array([self.logit_scale, -self.logit_scale]))
        self.rotation = np.eye(w)
        if self.rotated:
            self._rotate_planted_layer(rng)

    def _rotate_planted_layer(self, rng: np.random.Generator) -> None:
        """Planted layer h = R v + c (R orthogonal, c a constant above |R v|'s bound, so the ReLU is the
        identity there); the next layer reads R^T (h - c)."""
        q, r = np.linalg.qr(rng.standard_normal((self.width, self.width)))
        self.rotation = q * np.sign(np.diag(r))
        ell = self.planted_layer - 1  # index of the planted layer in self.weights
        bound = self._upper_bounds()[ell]
        shift = np.full(self.width, np.linalg.norm(bound) + 1.0)
        self.weights[ell] = self.rotation @ self.weights[ell]
        self.biases[ell] = self.rotation @ self.biases[ell] + shift
        readout = self.weights[ell + 1] @ self.rotation.T
        self.biases[ell + 1] = self.biases[ell + 1] - readout @ shift
        self.weights[ell + 1] = readout

    def _upper_bounds(self) -> list[np.ndarray]:
        """Interval bound of every hidden unit's value over all one-hot inputs (layers before rotation)."""
        bounds, upper = [], np.ones(4 * self.n_entities)
        for weight, bias in zip(self.weights, self.biases):
            upper = np.maximum(np.clip(weight, 0, None) @ upper + np.clip(bias, 0, None), 0)
            bounds.append(upper)
        return bounds

    # --- the Task interface ------------------------------------------------------------------------

    def build_backbone(self, options: dict[str, Any], seed: int) -> torch.nn.Module:
        """The constructed MLP (no training: ``backbone.kind: constructed``)."""
        model = MLP(4 * self.n_entities, [self.width] * self.depth, 2)
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
        """Each target's planted units and decoys at the planted layer, as columns of the rotation."""
        rotation = torch.as_tensor(self.rotation, dtype=torch.float32)
        return {v: Planted(f"h{self.planted_layer}", rotation[:, self.planted_positions[v]].contiguous(),
                           rotation[:, self.decoy_positions[v]].contiguous()) for v in self.targets}
