"""Recurrent binary addition (docs/method.md §9.2): a GRU cell reads (a_t, b_t) least significant bit first
and emits the sum bits S0..S{n-1} and the final carry C{n}; the target variables are the internal
carries C1..C{n-1}.

Banks follow the paper's protocol: the 2^(2n) inputs are the bases, split into fit / calibration /
test, stratified by carry-chain length (the longest run of consecutive carries); each base is paired
with its 2n single-bit flips and, per target carry, the inputs that flip that carry while changing
the fewest other intermediate values (carry-targeted sources). The source kinds are the families.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch

from plotlib.backbones import UnrolledGRU
from plotlib.causal import CausalModel
from plotlib.readout import BitsReadout
from plotlib.sites import Location
from plotlib.tasks import Task, register_task

STRATIFIED_SPLITS = ("fit", "calibration", "test")


def _carry(a: Any, b: Any, c: Any) -> Any:
    return (a & b) | (c & (a ^ b))


def longest_run(bits: np.ndarray) -> np.ndarray:
    """Per row, the longest run of consecutive ones (the carry-chain length)."""
    best = run = np.zeros(len(bits), dtype=np.int64)
    for column in bits.T:
        run = np.where(column == 1, run + 1, 0)
        best = np.maximum(best, run)
    return best


def stratified_split(strata: np.ndarray, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Indices for each split, every stratum shared out in proportion to the split sizes.

    Items are ordered by stratum (shuffled within), then dealt one by one to the split furthest
    behind its quota, so each split gets its share of every stratum; leftovers stay unused.
    """
    n = len(strata)
    quotas = {**sizes, "_unused": n - sum(sizes.values())}
    if quotas["_unused"] < 0:
        raise ValueError(f"split sizes {sizes} need {sum(sizes.values())} items, only {n} exist")
    order = np.lexsort((rng.random(n), strata))
    taken = {s: [] for s in quotas}
    for i, item in enumerate(order):
        split = max(quotas, key=lambda s: quotas[s] * (i + 1) / n - len(taken[s]))
        taken[split].append(item)
    return {s: np.sort(np.array(taken[s], dtype=np.int64)) for s in sizes}


@register_task("binary_addition")
class BinaryAddition(Task):
    """Options: ``n_bits`` (4), ``carry_sources`` (carry-targeted sources per base and target carry, 3)."""

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        super().__init__(options, seed)
        self.n_bits = int(options.get("n_bits", 4))
        self.carry_sources = int(options.get("carry_sources", 3))
        if not 2 <= self.n_bits <= 8:
            raise ValueError(f"binary_addition needs 2 <= n_bits <= 8, got {self.n_bits}")
        if self.carry_sources < 0:
            raise ValueError(f"binary_addition carry_sources must be >= 0, got {self.carry_sources}")
        n = self.n_bits
        self.input_names = tuple(f"A{t}" for t in range(n)) + tuple(f"B{t}" for t in range(n))
        self.targets = tuple(f"C{i}" for i in range(1, n))
        self.readout = BitsReadout(n + 1)
        parents: dict[str, tuple[str, ...]] = {"C1": ("A0", "B0"), "S0": ("A0", "B0")}
        mechanisms: dict[str, Any] = {"C1": lambda a, b: a & b, "S0": lambda a, b: a ^ b}
        for t in range(1, n):
            parents[f"C{t + 1}"] = (f"A{t}", f"B{t}", f"C{t}")
            mechanisms[f"C{t + 1}"] = _carry
            parents[f"S{t}"] = (f"A{t}", f"B{t}", f"C{t}")
            mechanisms[f"S{t}"] = lambda a, b, c: a ^ b ^ c
        # the output is the bit mask of (S0..S{n-1}, C{n}), the layout of the readout's bits
        parents["O"] = (*(f"S{t}" for t in range(n)), f"C{n}")
        mechanisms["O"] = lambda *bits: sum(bit << i for i, bit in enumerate(bits))
        self.causal_model = CausalModel(inputs=self.input_names, parents=parents, mechanisms=mechanisms, output="O")

    # --- inputs and labels -----------------------------------------------------------------------

    def all_inputs(self) -> pd.DataFrame:
        """Every (a, b), a major, as bit columns A0.., B0.."""
        values = np.arange(2 ** (2 * self.n_bits))
        a, b = values >> self.n_bits, values & (2 ** self.n_bits - 1)
        return self._from_ints(a, b)

    def _from_ints(self, a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
        cols = {f"A{t}": (a >> t) & 1 for t in range(self.n_bits)}
        cols.update({f"B{t}": (b >> t) & 1 for t in range(self.n_bits)})
        return pd.DataFrame({k: np.asarray(v, dtype=np.int64) for k, v in cols.items()})

    def sample_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        top = 2 ** self.n_bits
        return self._from_ints(rng.integers(0, top, n), rng.integers(0, top, n))

    def evaluation_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        """All 2^(2n) inputs: factual accuracy is exact, not sampled."""
        return self.all_inputs()

    def values(self, inputs: pd.DataFrame, interventions: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Every causal variable, vectorized over the rows of ``inputs``."""
        return self.causal_model.run({c: inputs[c].to_numpy() for c in self.input_names}, interventions)

    def outputs(self, inputs: pd.DataFrame, interventions: dict[str, Any] | None = None) -> np.ndarray:
        return np.asarray(self.values(inputs, interventions)["O"], dtype=np.int64)

    def label(self, output_value: Any) -> int:
        return int(output_value)

    def encode(self, inputs: pd.DataFrame) -> torch.Tensor:
        """(rows, n_bits, 2): step t reads (A_t, B_t)."""
        a = inputs[[f"A{t}" for t in range(self.n_bits)]].to_numpy(np.float32)
        b = inputs[[f"B{t}" for t in range(self.n_bits)]].to_numpy(np.float32)
        return torch.from_numpy(np.stack([a, b], axis=-1))

    # --- banks -----------------------------------------------------------------------------------

    def _intermediates(self, inputs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        v = self.values(inputs)
        carries = np.stack([v[f"C{i}"] for i in range(1, self.n_bits + 1)], axis=1)
        sums = np.stack([v[f"S{t}"] for t in range(self.n_bits)], axis=1)
        return carries, sums

    @cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Carries, sum bits and input bits of every input (rows of :meth:`all_inputs`)."""
        inputs = self.all_inputs()
        return (*self._intermediates(inputs), inputs.to_numpy())

    def base_split(self, sizes: dict[str, int]) -> dict[str, np.ndarray]:
        """Row indices into :meth:`all_inputs` of each split's bases, stratified by carry-chain length
        and seeded by the run seed (every split is drawn from the same partition)."""
        carries = self._table[0]
        parts = stratified_split(longest_run(carries), {s: sizes[s] for s in STRATIFIED_SPLITS},
                                 np.random.default_rng([self.seed, 2 ** self.n_bits, 7]))
        if sizes["das_train"] > sizes["fit"]:
            raise ValueError(f"binary_addition trains DAS on fit bases: banks.das_train ({sizes['das_train']}) "
                             f"must be <= banks.fit ({sizes['fit']})")
        parts["das_train"] = parts["fit"][:sizes["das_train"]]
        return parts

    def carry_targeted(self, base: int, carry: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of the ``carry_sources`` inputs that flip carry C{carry} of ``base`` while changing
        the fewest earlier sum bits, then the fewest other intermediates, then the fewest input bits;
        remaining ties are broken at random (seeded)."""
        carries, sums, bits = self._table
        flips = carries[:, carry - 1] != carries[base, carry - 1]
        prefix = (sums[:, :carry] != sums[base, :carry]).sum(1)
        others = (carries != carries[base]).sum(1) + (sums != sums[base]).sum(1) - 1
        hamming = (bits != bits[base]).sum(1)
        candidates = np.flatnonzero(flips)
        order = np.lexsort((rng.random(len(candidates)), hamming[candidates], others[candidates], prefix[candidates]))
        return candidates[order[:self.carry_sources]]

    def bank_pairs(self, split: str, sizes: dict[str, int], rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        inputs = self.all_inputs()
        bases = self.base_split(sizes)[split]
        n = self.n_bits
        # row index of (a, b) in all_inputs is (a << n) | b, so flipping A_t or B_t is one xor
        flip_bits = {f"A{t}": 1 << (n + t) for t in range(n)} | {f"B{t}": 1 << t for t in range(n)}
        base_rows, source_rows, families = [], [], []
        for base in bases:
            for col in self.input_names:  # single-bit flips
                base_rows.append(base)
                source_rows.append(int(base) ^ flip_bits[col])
                families.append(f"flip_{col}")
            for target in self.targets:
                carry = int(target[1:])
                for source in self.carry_targeted(base, carry, rng):
                    base_rows.append(base)
                    source_rows.append(int(source))
                    families.append(f"carry_{target}")
        base_frame = inputs.iloc[base_rows].reset_index(drop=True)
        source_frame = inputs.iloc[source_rows].reset_index(drop=True)
        return base_frame, source_frame, families

    def sample_pairs(self, rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """Random pairs (not the benchmark's banks, which come from :meth:`bank_pairs`)."""
        return self.sample_inputs(rng, n), self.sample_inputs(rng, n), ["random"] * n

    # --- backbone and sites ----------------------------------------------------------------------

    def build_backbone(self, options: dict[str, Any], seed: int) -> torch.nn.Module:
        hidden = list(options.get("hidden", [16]))
        if len(hidden) != 1:
            raise ValueError(f"binary_addition's GRU has one hidden width: backbone.hidden must be [d], got {hidden}")
        torch.manual_seed(seed)
        return UnrolledGRU(2, int(hidden[0]), self.n_bits)

    def coarse_locations(self, backbone: torch.nn.Module) -> list[Location]:
        return [Location(name) for name in backbone.taps]
