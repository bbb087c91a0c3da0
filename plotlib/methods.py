"""The methods a benchmark can compare, and what each one is built from (METHOD.md 3-8).

One table answers, for every method name: is it a calibrated handle or a DAS search; on which site
grid its coupling lives (``coarse``: the Stage A sites; ``native`` / ``pca``: Stage B inside each
variable's Stage A location); which solver it uses; which earlier method it builds on; and so which
runtime rows its counted time includes (METHOD.md 8).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """``parent``: the method whose handle this one starts from (Stage B and guided DAS)."""

    name: str
    kind: str  # "handle" (coupling + calibration) or "das"
    grid: str | None = None  # handle methods: "coarse", "native" or "pca"
    solver: str | None = None  # "plot" (the spec's plot.solver), "refine" (refine.solver), uot, softmax, onehot
    parent: str | None = None


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("PLOT", "handle", "coarse", "plot"),
    Method("PLOT-UOT", "handle", "coarse", "uot"),
    Method("cosine", "handle", "coarse", "softmax"),
    Method("brute-force", "handle", "coarse", "onehot"),
    Method("PLOT-native", "handle", "native", "refine", parent="PLOT"),
    Method("PLOT-PCA", "handle", "pca", "refine", parent="PLOT"),
    Method("Full DAS", "das"),
    Method("PLOT-DAS", "das", parent="PLOT"),
    Method("PLOT-native-DAS", "das", parent="PLOT-native"),
    Method("PLOT-PCA-DAS", "das", parent="PLOT-PCA"),
)}
#: Stage B site grids and the method that couples on each; every grid, Stage A's first.
REFINE_GRIDS = {"native": "PLOT-native", "pca": "PLOT-PCA"}
GRIDS = ("coarse", *REFINE_GRIDS)
BASELINE = "Full DAS"


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; methods are {list(METHODS)}")
    return METHODS[name]


def charges(name: str) -> tuple[str, ...]:
    """The runtime-row ``method`` labels whose time counts toward ``name``: its own rows, the shared
    Stage A ``signatures`` when it couples on them, and everything its parent needs."""
    method = get(name)
    own = ("signatures", name) if method.grid == "coarse" and method.solver != "onehot" else (name,)
    inherited = charges(method.parent) if method.parent else ()
    return tuple(dict.fromkeys((*inherited, *own)))


def missing_parents(names: list[str]) -> list[tuple[str, str]]:
    """(method, parent) pairs where a method is listed without the method it builds on."""
    return [(n, get(n).parent) for n in names if get(n).parent and get(n).parent not in names]


def coupling_methods(names: list[str], grid: str) -> list[str]:
    """The listed methods that solve a coupling on ``grid`` (brute-force needs no coupling)."""
    return [n for n in names if get(n).kind == "handle" and get(n).grid == grid and get(n).solver != "onehot"]
