"""Hierarchical equality (DAS paper; docs/method.md §9.1): output (W == X) == (Y == Z) over random entities."""
from __future__ import annotations

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


@register_task("hierarchical_equality")
class HierarchicalEquality(Task):
    """Entities are random vectors; the MLP sees their concatenation and predicts the output bit."""

    targets = ("WX", "YZ")
    readout = SoftmaxReadout(2)

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        super().__init__(options, seed)
        self.n_entities = int(options.get("n_entities", 100))
        self.entity_dim = int(options.get("entity_dim", 4))
        if self.n_entities < 2:
            raise ValueError("hierarchical_equality needs n_entities >= 2")
        gen = np.random.default_rng([seed, 7919])
        self.entities = torch.tensor(gen.uniform(-1, 1, (self.n_entities, self.entity_dim)), dtype=torch.float32)
        self.causal_model = CausalModel(
            inputs=INPUTS,
            parents={"WX": ("W", "X"), "YZ": ("Y", "Z"), "O": ("WX", "YZ")},
            mechanisms={"WX": lambda w, x: w == x, "YZ": lambda y, z: y == z, "O": lambda a, b: a == b},
            output="O",
        )

    def _entities_with_equality(self, rng: np.random.Generator, equal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = rng.integers(0, self.n_entities, len(equal))
        offset = rng.integers(1, self.n_entities, len(equal))  # never 0: a different entity
        second = np.where(equal, first, (first + offset) % self.n_entities)
        return first, second

    def _inputs_from_truths(self, rng: np.random.Generator, wx: np.ndarray, yz: np.ndarray) -> pd.DataFrame:
        w, x = self._entities_with_equality(rng, wx)
        y, z = self._entities_with_equality(rng, yz)
        return pd.DataFrame({"W": w, "X": x, "Y": y, "Z": z})

    def sample_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        combo = rng.integers(0, 4, n)  # the four (WX, YZ) truth combinations, uniformly
        return self._inputs_from_truths(rng, combo % 2 == 1, combo // 2 == 1)

    def sample_pairs(self, rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """Bases uniform over truth combinations; each variable is sensitive on exactly half the pairs
        (the four flip patterns of (WX, YZ) cycle), so every split is balanced for both variables."""
        base = self.sample_inputs(rng, n)
        flips = rng.permutation(np.arange(n) % 4)
        wx = (base.W.to_numpy() == base.X.to_numpy()) ^ (flips % 2 == 1)
        yz = (base.Y.to_numpy() == base.Z.to_numpy()) ^ (flips // 2 == 1)
        source = self._inputs_from_truths(rng, wx, yz)
        return base, source, ["random"] * n

    def outputs(self, inputs: pd.DataFrame, interventions: dict[str, Any] | None = None) -> np.ndarray:
        """Vectorized: the mechanisms are elementwise comparisons, so whole columns run at once."""
        columns = {c: inputs[c].to_numpy() for c in INPUTS}
        return self.causal_model.run(columns, interventions)["O"].astype(np.int64)

    def encode(self, inputs: pd.DataFrame) -> torch.Tensor:
        ids = torch.tensor(inputs[list(INPUTS)].to_numpy(np.int64))
        return self.entities[ids].reshape(len(inputs), -1)

    def label(self, output_value: Any) -> int:
        return int(bool(output_value))

    def build_backbone(self, options: dict[str, Any], seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return MLP(4 * self.entity_dim, list(options.get("hidden", [16, 16, 16])), self.readout.width)

    def coarse_locations(self, backbone: torch.nn.Module) -> list[Location]:
        return [Location(name) for name in backbone.taps]
