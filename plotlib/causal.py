"""Causal models: named variables with mechanisms, run and interchange interventions."""
from __future__ import annotations

from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import Any, Callable, Mapping

Values = dict[str, Any]


@dataclass
class CausalModel:
    """A deterministic causal model over named variables.

    ``mechanisms[v]`` maps the values of ``parents[v]`` (in order) to the value of ``v``.
    Input variables have no parents and no mechanism. ``output`` names the output variable.
    """

    inputs: tuple[str, ...]
    parents: Mapping[str, tuple[str, ...]]
    mechanisms: Mapping[str, Callable[..., Any]]
    output: str
    order: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        unknown = {p for ps in self.parents.values() for p in ps} - set(self.parents) - set(self.inputs)
        if unknown:
            raise ValueError(f"parents name unknown variables: {sorted(unknown)}")
        if set(self.parents) != set(self.mechanisms):
            raise ValueError("every non-input variable needs exactly one mechanism")
        graph = {v: set(ps) for v, ps in self.parents.items()}
        graph.update({i: set() for i in self.inputs})
        self.order = tuple(TopologicalSorter(graph).static_order())
        if self.output not in graph:
            raise ValueError(f"output variable {self.output!r} is not in the model")

    @property
    def variables(self) -> tuple[str, ...]:
        return self.order

    def run(self, inputs: Mapping[str, Any], interventions: Mapping[str, Any] | None = None) -> Values:
        """All variable values for ``inputs``, with ``interventions`` forcing variables."""
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise ValueError(f"missing input values: {sorted(missing)}")
        forced = dict(interventions or {})
        values: Values = {}
        for var in self.order:
            if var in forced:
                values[var] = forced[var]
            elif var in self.inputs:
                values[var] = inputs[var]
            else:
                values[var] = self.mechanisms[var](*(values[p] for p in self.parents[var]))
        return values

    def interchange(self, base: Mapping[str, Any], source: Mapping[str, Any], variables: str | tuple[str, ...]) -> Any:
        """Counterfactual output: run ``base`` with ``variables`` set to their values on ``source``."""
        names = (variables,) if isinstance(variables, str) else variables
        source_values = self.run(source)
        return self.run(base, {v: source_values[v] for v in names})[self.output]
