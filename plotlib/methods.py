"""The methods a benchmark can compare, and what each one is built from (docs/method.md §3-8).

One table answers, for every method name: is it a calibrated handle or a DAS search; on which site
grid its coupling lives (``coarse``: the Stage A sites; ``native`` / ``pca``: Stage B inside each
variable's Stage A location); which solver it uses; which earlier method it builds on; and so which
runtime rows its counted time includes (docs/method.md §8).
"""
from __future__ import annotations

from dataclasses import dataclass

#: Every coupling solver and the calibration-grid keys it takes (the spec section holds one grid per key):
#: balanced entropic OT, unbalanced OT, exact OT, entropic Gromov-Wasserstein and fused GW
#: (:func:`plotlib.transport.couple`), and the no-transport softmax baseline. A new solver is added here and
#: in ``couple``.
SOLVER_PARAMS = {"sinkhorn": ("eps",), "uot": ("eps", "beta"), "emd": (), "gw": ("eps",), "fgw": ("eps", "alpha"),
                 "softmax": ("temperature",)}


@dataclass(frozen=True)
class Method:
    """``parent``: the method whose handle this one starts from (Stage B and guided DAS). ``where`` (DAS
    methods): at ``every`` coarse location, where the parent's handle points (``guide``), or at a coarse
    location drawn uniformly per variable with the run's seed (``random``); ``mask``: learn each subspace's
    size instead of searching the k grid, Boundless DAS (``boundary``, a rotation) or DBM (``units``, native
    units), see :mod:`plotlib.das`."""

    name: str
    kind: str  # "handle" (coupling + calibration) or "das"
    grid: str | None = None  # handle methods: "coarse", "native" or "pca"
    solver: str | None = None  # "plot" (the spec's plot.solver), "refine" (refine.solver), uot, softmax, onehot
    parent: str | None = None
    where: str | None = None  # DAS methods: "every", "guide" or "random"
    mask: str | None = None  # DAS methods: "boundary" (Boundless DAS) or "units" (DBM), one cell per lr, its size learned


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("PLOT", "handle", "coarse", "plot"),
    Method("PLOT-UOT", "handle", "coarse", "uot"),
    Method("cosine", "handle", "coarse", "softmax"),
    Method("brute-force", "handle", "coarse", "onehot"),
    Method("PLOT-native", "handle", "native", "refine", parent="PLOT"),
    Method("PLOT-PCA", "handle", "pca", "refine", parent="PLOT"),
    Method("Full DAS", "das", where="every"),
    Method("PLOT-DAS", "das", parent="PLOT", where="guide"),
    Method("Full Boundless DAS", "das", where="every", mask="boundary"),
    Method("PLOT-Boundless-DAS", "das", parent="PLOT", where="guide", mask="boundary"),
    Method("Full DBM", "das", where="every", mask="units"),
    Method("PLOT-DBM", "das", parent="PLOT", where="guide", mask="units"),
    Method("PLOT-native-DAS", "das", parent="PLOT-native", where="guide"),
    Method("PLOT-PCA-DAS", "das", parent="PLOT-PCA", where="guide"),
    # controls for a guide (docs/method.md §7): DAS at the brute-force site, and at a random coarse location
    Method("brute-force-DAS", "das", parent="brute-force", where="guide"),
    Method("random-DAS", "das", where="random"),
)}
#: Stage B site grids and the method that couples on each; every grid, Stage A's first.
REFINE_GRIDS = {"native": "PLOT-native", "pca": "PLOT-PCA"}
GRIDS = ("coarse", *REFINE_GRIDS)
BASELINE = "Full DAS"
#: Runtime-row labels of work one family needs and the others do not (docs/method.md §8): the fit bank's
#: cache and the Stage A signatures (every method that couples on them), and the DAS training bank's
#: cache (every DAS method). Everything else that no method owns is ``shared``.
SIGNATURES, DAS_TRAINING = "signatures", "das-training"
CACHE_CHARGED_TO = {"fit": SIGNATURES, "das_train": DAS_TRAINING}
SHARED = "shared"


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; methods are {list(METHODS)}")
    return METHODS[name]


def charges(name: str) -> tuple[str, ...]:
    """The runtime-row ``method`` labels whose time counts toward ``name``: its own rows, the Stage A
    ``signatures`` (with the fit bank's cache) when it couples on them, the DAS training bank's cache
    when it trains DAS, and everything its parent needs."""
    method = get(name)
    if method.kind == "das":
        own = (DAS_TRAINING, name)
    elif method.grid == "coarse" and method.solver != "onehot":
        own = (SIGNATURES, name)
    else:
        own = (name,)
    inherited = charges(method.parent) if method.parent else ()
    return tuple(dict.fromkeys((*inherited, *own)))


def missing_parents(names: list[str]) -> list[tuple[str, str]]:
    """(method, parent) pairs where a method is listed without the method it builds on."""
    return [(n, get(n).parent) for n in names if get(n).parent and get(n).parent not in names]


def coupling_methods(names: list[str], grid: str) -> list[str]:
    """The listed methods that solve a coupling on ``grid`` (brute-force needs no coupling)."""
    return [n for n in names if get(n).kind == "handle" and get(n).grid == grid and get(n).solver != "onehot"]
