"""Function composition, for a transformer trained here: intermediate values that no input token holds.

"c F K B" -> B(K(F(c))): a start value and ``steps`` functions, each one of ``functions`` fixed random
permutations of ``values`` values (the task's tables, the same for every seed; drawn from option
``table_seed``). The model must learn the tables and apply them in order. Target variables ``V1`` ..
``V<steps - 1>``: the value after each function but the last, whose result is the output. ``Vj`` depends
on the start value and the first j functions together, so no single input token holds it, and applying j
functions one after another takes j steps.

Counterfactual families (each a source that differs from its base as said): ``x`` (a new start value),
``f<j>`` (function j redrawn), and ``keep<j>`` for j < steps (the start value and functions 1..j redrawn
so that ``Vj`` stays). A ``keep<j>`` source leaves ``Vj`` and everything after it unchanged while its
start and first functions differ, so swapping an input token alone cannot reproduce what setting an
intermediate variable does. With 3 steps, each target is sensitive on half the families.

Named positions: ``x`` (the start value), ``f1`` .. ``f<steps - 1>`` (each function but the last) and
``last`` (the last function, where the answer is read).
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from plotlib.causal import CausalModel
from plotlib.readout import SoftmaxReadout
from plotlib.tasks import register_task
from plotlib.tasks.prompted import PromptedTask

VALUES = tuple("abcdefghijklmnop")
FUNCTIONS = tuple("ABCDEFGHIJKLMNOP")


@register_task("composition")
class Composition(PromptedTask):
    """Options: ``steps`` (3: functions per prompt), ``values`` (the first ``values`` of a..p, 16),
    ``functions`` (the first ``functions`` of A..P, 16), ``table_seed`` (0), ``curriculum`` (train on 1 to
    ``steps`` functions, False), ``positions`` (from ``x``, ``f1`` .. ``f<steps - 1>`` and ``last``)."""

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        super().__init__(options, seed)
        self.steps = int(options.get("steps", 3))
        n_values, n_functions = int(options.get("values", 16)), int(options.get("functions", 16))
        if self.steps < 2:
            raise ValueError(f"composition needs steps >= 2 (an intermediate value), got {self.steps}")
        if not (2 <= n_values <= len(VALUES) and 2 <= n_functions <= len(FUNCTIONS)):
            raise ValueError(f"composition needs 2..16 values and 2..16 functions, got {n_values} and {n_functions}")
        self.values, self.functions = VALUES[:n_values], FUNCTIONS[:n_functions]
        self.table_seed = int(options.get("table_seed", 0))
        self.curriculum = bool(options.get("curriculum", False))
        self.answer_words = self.values
        self.readout = SoftmaxReadout(len(self.values))
        self.targets = tuple(f"V{j}" for j in range(1, self.steps))
        self.families = ("x", *(f"f{j}" for j in range(1, self.steps + 1)), *(f"keep{j}" for j in range(1, self.steps)))
        self.position_names = ("x", *(f"f{j}" for j in range(1, self.steps)), "last")
        self.positions = self._grid_positions(options, self.position_names)
        chain = ["x", *self.targets, "O"]
        parents = {chain[j]: (chain[j - 1], f"f{j}") for j in range(1, self.steps + 1)}
        self.causal_model = CausalModel(inputs=("x", *(f"f{j}" for j in range(1, self.steps + 1))), parents=parents,
                                        mechanisms={v: self.apply for v in parents}, output="O")

    @cached_property
    def tables(self) -> dict[str, dict[str, str]]:
        """Each function's permutation of the values, drawn once from ``table_seed``."""
        rng = np.random.default_rng([self.table_seed, 2718])
        return {f: dict(zip(self.values, (self.values[i] for i in rng.permutation(len(self.values)))))
                for f in self.functions}

    def apply(self, value: str, function: str) -> str:
        return self.tables[function][value]

    # --- inputs and pairs --------------------------------------------------------------------------

    def sample_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        frame = {"x": rng.choice(self.values, n)}
        frame.update({f"f{j}": rng.choice(self.functions, n) for j in range(1, self.steps + 1)})
        return pd.DataFrame(frame)

    def training_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        """With ``curriculum``, prompts of 1 to ``steps`` functions (uniform; the missing ones empty), so a
        model learns the tables before composing them."""
        frame = self.sample_inputs(rng, n)
        if self.curriculum:
            used = rng.integers(1, self.steps + 1, n)
            for j in range(2, self.steps + 1):
                frame.loc[used < j, f"f{j}"] = ""
        return frame

    def _source(self, rng: np.random.Generator, base: dict, family: str) -> dict:
        """A source that differs from ``base`` as ``family`` says (redrawn until it differs)."""
        if not family.startswith("keep"):  # x or f<j>: that one input redrawn
            pool = self.values if family == "x" else self.functions
            return {**base, family: rng.choice([v for v in pool if v != base[family]])}
        j = int(family.removeprefix("keep"))
        wanted = self.causal_model.run(base)[f"V{j}"]
        while True:  # new start and functions 1..j; the last of them chosen among those that keep Vj
            source = {**base, **self.sample_inputs(rng, 1).iloc[0][["x", *(f"f{i}" for i in range(1, j))]].to_dict()}
            before = self.causal_model.run(source)[f"V{j - 1}" if j > 1 else "x"]
            keeping = [f for f in self.functions if self.apply(before, f) == wanted]
            if keeping and source["x"] != base["x"]:
                return {**source, f"f{j}": rng.choice(keeping)}

    def sample_pairs(self, rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """Bases from :meth:`sample_inputs`; the families cycle, so each gets an equal share of the pairs."""
        families = [self.families[i % len(self.families)] for i in rng.permutation(n)]
        base = self.sample_inputs(rng, n)
        sources = [self._source(rng, row, family) for row, family in zip(base.to_dict("records"), families)]
        return base, pd.DataFrame(sources)[base.columns], families

    def outputs(self, inputs: pd.DataFrame, interventions: dict[str, Any] | None = None) -> np.ndarray:
        """Without interventions, the functions applied in order, column by column (no causal-model run per row)."""
        if interventions:
            return super().outputs(inputs, interventions)
        value = inputs["x"].to_numpy()
        for j in range(1, self.steps + 1):  # an empty function (a shorter curriculum prompt) is the identity
            value = np.array([self.apply(v, f) if f else v for f, v in zip(inputs[f"f{j}"], value)])
        return np.array([self.label(v) for v in value])

    # --- text ----------------------------------------------------------------------------------------

    def words(self) -> list[str]:
        return [*self.values, *self.functions]

    def prompt(self, row: dict) -> tuple[str, dict[str, Any]]:
        """"c F K B": the start value, then the functions in the order they apply."""
        words = [w for w in (row["x"], *(row[f"f{j}"] for j in range(1, self.steps + 1))) if w]
        starts = np.cumsum([0, *(len(w) + 1 for w in words[:-1])])
        # position i is word i; ``last``, and a short (curriculum) prompt's missing positions, its last word
        return " ".join(words), {name: int(starts[min(i, len(words) - 1)]) for i, name in enumerate(self.position_names)}
