"""A user task outside plotlib: is a + b at least c? The causal model computes the sum S = a + b first,
so S is the variable to localize. Registered with @register_task; the spec lists this file under
``imports``, so nothing needs to be installed or put on PYTHONPATH."""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import torch

from plotlib.backbones import MLP
from plotlib.causal import CausalModel
from plotlib.readout import SoftmaxReadout
from plotlib.sites import Location
from plotlib.tasks import Task, register_task

INPUTS = ("a", "b", "c")


@register_task("sum_compare")
class SumCompare(Task):
    """a, b in 0..n-1 and c in 0..2n-2, one-hot encoded; the output is whether a + b >= c."""

    targets = ("S",)
    readout = SoftmaxReadout(2)

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        super().__init__(options, seed)
        self.n = int(options.get("n", 5))
        self.causal_model = CausalModel(inputs=INPUTS, parents={"S": ("a", "b"), "O": ("S", "c")},
                                        mechanisms={"S": lambda a, b: a + b, "O": lambda s, c: s >= c}, output="O")

    def sample_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        return pd.DataFrame({"a": rng.integers(0, self.n, n), "b": rng.integers(0, self.n, n), "c": rng.integers(0, 2 * self.n - 1, n)})

    def sample_pairs(self, rng: np.random.Generator, n: int):
        """Independent bases and sources: S differs on most pairs, and the output changes on some of them."""
        return self.sample_inputs(rng, n), self.sample_inputs(rng, n), ["random"] * n

    def evaluation_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        """Every input: factual accuracy is exact."""
        grid = itertools.product(range(self.n), range(self.n), range(2 * self.n - 1))
        return pd.DataFrame(list(grid), columns=list(INPUTS))

    def encode(self, inputs: pd.DataFrame) -> torch.Tensor:
        values = torch.tensor(inputs[list(INPUTS)].to_numpy(np.int64))
        sizes = (self.n, self.n, 2 * self.n - 1)
        return torch.cat([torch.nn.functional.one_hot(values[:, i], size) for i, size in enumerate(sizes)], dim=1).float()

    def label(self, output_value: Any) -> int:
        return int(bool(output_value))

    def build_backbone(self, options: dict[str, Any], seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return MLP(4 * self.n - 1, list(options.get("hidden", [32, 32])), self.readout.width)

    def coarse_locations(self, backbone: torch.nn.Module) -> list[Location]:
        return [Location(name) for name in backbone.taps]
