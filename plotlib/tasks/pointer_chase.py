"""Multi-hop pointer chasing, for a transformer trained here: variables that must be computed inside.

"kd d7 bk ca a2 ec ? b" -> 7: each prompt binds ``chains`` chains of names (head -> 1st -> ... ->
``hops``-th name -> a digit), in shuffled order, and asks for the digit at the end of one chain. Each
statement is one token ("bk": b is bound to k), so a lookup is one attention step, and no token holds a
hop's result on its own: the name k sits in "bk" beside the name that points to it. Target variables ``H1`` .. ``H<hops>``: the name reached after
each hop from the queried head. None is the output, and resolving hop j takes j lookups, so the
variables cannot all live at one depth.

Counterfactual families (sources are always reshuffled): ``reorder`` (the same chains; the other
chains' digits redrawn: every target invariant), ``swap<j>`` (the queried chain's j-th name traded
with another chain's: only ``H<j>`` changes) and ``otherQuery`` (another chain is asked: every target
changes). So every target is sensitive on 2 of every ``hops + 2`` pairs and invariant on the rest.

Named positions: ``last`` (the asked name, where the answer is read) and ``link<j>`` (the queried
chain's j-th statement, whose right-hand side is ``H<j>``, or the digit for the last link).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from plotlib.causal import CausalModel
from plotlib.readout import SoftmaxReadout
from plotlib.tasks import register_task
from plotlib.tasks.prompted import PromptedTask

NAMES = tuple("abcdefghijklmnop")
DIGITS = tuple("0123456789")


@lru_cache(maxsize=65536)
def bindings(links: str) -> dict[str, str]:
    """Each name's right-hand side in a prompt's statements ("q=x x=7 ...")."""
    return dict(link.split("=") for link in links.split())


def follow(links: str, name: str) -> str:
    """One hop: what ``name`` is bound to (a clear error where an intervention left the chain)."""
    try:
        return bindings(links)[name]
    except KeyError:
        raise ValueError(f"name {name!r} is not bound in {links!r}") from None


@register_task("pointer_chase")
class PointerChase(PromptedTask):
    """Options: ``chains`` (2), ``hops`` (2: names between the head and the digit), ``names`` (the first
    ``names`` of a..p, 10), ``curriculum`` (train on chains of 0..hops hops, False), ``positions`` (from ``last`` and ``link1`` .. ``link<hops + 1>``)."""

    answer_words = DIGITS
    readout = SoftmaxReadout(len(DIGITS))

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        super().__init__(options, seed)
        self.n_chains = int(options.get("chains", 2))
        self.hops = int(options.get("hops", 2))
        self.names = NAMES[: int(options.get("names", 10))]
        self.curriculum = bool(options.get("curriculum", False))
        if self.hops < 1 or self.n_chains < 2:
            raise ValueError(f"pointer_chase needs hops >= 1 and chains >= 2, got hops {self.hops}, chains {self.n_chains}")
        if self.n_chains * (self.hops + 1) > len(self.names) or self.n_chains > len(DIGITS):
            raise ValueError(f"pointer_chase: {self.n_chains} chains of {self.hops + 1} names need that many distinct "
                             f"names (names: {len(self.names)}, at most {len(NAMES)})")
        self.targets = tuple(f"H{j}" for j in range(1, self.hops + 1))
        self.families = ("reorder", *(f"swap{j}" for j in range(1, self.hops + 1)), "otherQuery")
        self.position_names = ("last", *(f"link{j}" for j in range(1, self.hops + 2)))
        self.positions = self._grid_positions(options, self.position_names)
        parents = {"H1": ("links", "query"), **{f"H{j}": ("links", f"H{j - 1}") for j in range(2, self.hops + 1)},
                   "O": ("links", f"H{self.hops}")}
        self.causal_model = CausalModel(inputs=("links", "query"), parents=parents,
                                        mechanisms={v: follow for v in parents}, output="O")

    # --- inputs and pairs --------------------------------------------------------------------------

    def _draw(self, rng: np.random.Generator, hops: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """A prompt's structure: names (chains, hops + 1), digits (chains,), the queried chain."""
        hops = self.hops if hops is None else hops
        nodes = rng.choice(len(self.names), (self.n_chains, hops + 1), replace=False)
        return nodes, rng.choice(len(DIGITS), self.n_chains, replace=False), int(rng.integers(self.n_chains))

    def _render(self, rng: np.random.Generator, nodes: np.ndarray, digits: np.ndarray, chain: int) -> dict:
        """The input row: statements in a random order, and the asked head."""
        links = [f"{self.names[c[j]]}={self.names[c[j + 1]]}" for c in nodes for j in range(len(c) - 1)]
        links += [f"{self.names[c[-1]]}={DIGITS[d]}" for c, d in zip(nodes, digits)]
        return {"links": " ".join(links[i] for i in rng.permutation(len(links))), "query": self.names[nodes[chain, 0]]}

    def sample_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        return pd.DataFrame([self._render(rng, *self._draw(rng)) for _ in range(n)])

    def training_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        """With ``curriculum``, chains of 0 to ``hops`` hops (one length per prompt, uniform): a model
        learns one lookup before composing them (without it, small models sat at chance between the
        chains' digits for 3000 steps on development seeds)."""
        if not self.curriculum:
            return self.sample_inputs(rng, n)
        return pd.DataFrame([self._render(rng, *self._draw(rng, int(rng.integers(self.hops + 1)))) for _ in range(n)])

    def _source(self, rng: np.random.Generator, nodes: np.ndarray, digits: np.ndarray, chain: int, family: str) -> dict:
        nodes, digits = nodes.copy(), digits.copy()
        other = int(rng.choice([c for c in range(self.n_chains) if c != chain]))
        if family == "reorder":
            free = [d for d in range(len(DIGITS)) if d != digits[chain]]
            rest = [c for c in range(self.n_chains) if c != chain]
            digits[rest] = rng.choice(free, len(rest), replace=False)
        elif family == "otherQuery":
            chain = other
        else:
            j = int(family.removeprefix("swap"))
            nodes[[chain, other], j] = nodes[[other, chain], j]
        return self._render(rng, nodes, digits, chain)

    def sample_pairs(self, rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """Bases from fresh structures; the families cycle, so each gets 1 / (hops + 2) of the pairs."""
        families = [self.families[i % len(self.families)] for i in rng.permutation(n)]
        bases, sources = [], []
        for family in families:
            structure = self._draw(rng)
            bases.append(self._render(rng, *structure))
            sources.append(self._source(rng, *structure, family))
        return pd.DataFrame(bases), pd.DataFrame(sources), families

    def outputs(self, inputs: pd.DataFrame, interventions: dict[str, Any] | None = None) -> np.ndarray:
        """Without interventions, each chain is followed to its digit (curriculum chains are shorter)."""
        if interventions:
            return super().outputs(inputs, interventions)
        answers = []
        for links, name in zip(inputs["links"], inputs["query"]):
            while name not in DIGITS:
                name = follow(links, name)
            answers.append(self.label(name))
        return np.array(answers)

    # --- text ----------------------------------------------------------------------------------------

    def words(self) -> list[str]:
        return [*NAMES, *DIGITS, "?", *(a + b for a in NAMES for b in (*NAMES, *DIGITS) if a != b)]

    def prompt(self, row: dict) -> tuple[str, dict[str, Any]]:
        """"ab b7 ... ? a", with the character where each statement of the queried chain starts."""
        text, right = "", {}
        for link in row["links"].split():
            left, value = link.split("=")
            right[left] = len(text)
            text += f"{left}{value} "
        text += f"? {row['query']}"
        chars = {"last": len(text) - 1}
        name = row["query"]
        for j in range(1, self.hops + 2):  # a shorter (curriculum) chain repeats its last statement
            chars[f"link{j}"] = right[name]
            after = follow(row["links"], name)
            name = after if after in right else name
        return text, chars
