"""Stage B site grids (docs/method.md §5): inside one coarse location, native coordinate groups at several
resolutions and spans of a PCA basis fitted on that location's activations."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from plotlib.handles import rank_sites
from plotlib.sites import Location, Site, Support, coordinate_groups


def native_group_sites(location: Location, width: int, group_sizes: Iterable[int]) -> list[Site]:
    """Contiguous coordinate blocks of every size in ``group_sizes`` (coarsest first, no duplicates)."""
    sites: dict[Site, None] = {}
    for size in sorted(set(group_sizes), reverse=True):
        if not 1 <= size <= width:
            raise ValueError(f"native group size {size} must be in 1..{width} (the width of {location.id})")
        sites.update(dict.fromkeys(coordinate_groups(location, width, size)))
    return list(sites)


def pca_span_sites(location: Location, width: int, prefixes: Iterable[int], bands: Iterable[int] = ()) -> list[Site]:
    """Leading-r prefixes ``basis[0:r]`` and equal bands ``basis[i*b:(i+1)*b]`` of a PCA basis."""
    sites: dict[Site, None] = {}
    for r in sorted(set(prefixes), reverse=True):
        if not 1 <= r <= width:
            raise ValueError(f"PCA prefix {r} must be in 1..{width} (the width of {location.id})")
        sites[Site(location, Support("basis", tuple(range(r))))] = None
    for b in sorted(set(bands), reverse=True):
        if not 1 <= b <= width:
            raise ValueError(f"PCA band size {b} must be in 1..{width} (the width of {location.id})")
        for start in range(0, width, b):
            sites[Site(location, Support("basis", tuple(range(start, min(start + b, width)))))] = None
    return list(sites)


def pca_basis(activations: torch.Tensor) -> torch.Tensor:
    """Principal directions (d, d) of ``activations`` (n, d), by decreasing variance, as orthonormal
    columns. Interchanges act on differences, so the mean needs no storing; directions past the data's
    rank complete the basis (so the full span is the whole space)."""
    if activations.dim() != 2 or activations.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 activation rows of shape (n, d), got {tuple(activations.shape)}")
    if not torch.isfinite(activations).all():
        raise FloatingPointError("non-finite activations given to PCA")
    x = activations.double()
    x = x - x.mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x)  # (d, d) eigenvectors of the scatter matrix, ascending
    return vectors.flip(1).float().contiguous()


def support_basis(sites: Iterable[Site], width: int, basis: torch.Tensor | None = None) -> torch.Tensor:
    """Orthonormal columns (d, r) spanning the union of ``sites``' supports at one location: unit
    vectors for native coordinates, PCA columns for basis spans (what support-restricted DAS searches in)."""
    sites = list(sites)
    kinds = {s.support.kind for s in sites}
    if len({s.location for s in sites}) != 1 or len(kinds) != 1:
        raise ValueError(f"a support basis needs sites of one location and one support kind, got {[s.id for s in sites]}")
    kind = kinds.pop()
    if kind == "all":
        return torch.eye(width)
    indices = sorted({i for s in sites for i in s.support.indices})
    if kind == "coords":
        return torch.eye(width)[:, indices]
    if basis is None:
        raise ValueError(f"basis sites {[s.id for s in sites]} need their basis")
    return basis[:, indices].contiguous()


def mass_support(pi_row: np.ndarray, sites: Sequence[Site], fraction: float, width: int,
                 cost_row: np.ndarray | None = None) -> Site:
    """The fewest dimensions (native coordinates, or basis components) of one location that hold
    ``fraction`` of a coupling row's mass, each site's mass spread evenly over its dimensions: a DAS
    support sized by the coupling rather than by a handle calibrated with a gain. Dimensions are ranked
    by :func:`plotlib.handles.rank_sites` (ties in mass by the lowest cost of a site holding them)."""
    locations, kinds = {s.location for s in sites}, {s.support.kind for s in sites} - {"all"}
    if len(locations) != 1 or len(kinds) > 1:
        raise ValueError(f"a mass support needs sites of one location and one support kind, got {[s.id for s in sites]}")
    evidence, dim_cost = np.zeros(width), np.full(width, np.inf)
    for i, (site, mass) in enumerate(zip(sites, pi_row)):
        dims = list(range(width)) if site.support.kind == "all" else list(site.support.indices)
        evidence[dims] += mass / len(dims)
        if cost_row is not None:
            dim_cost[dims] = np.minimum(dim_cost[dims], cost_row[i])
    if evidence.sum() <= 0:
        raise ValueError(f"no coupling mass at {next(iter(locations)).id}")
    order = rank_sites(evidence, None if cost_row is None else dim_cost)
    held = np.cumsum(evidence[order]) / evidence.sum()
    n = int(np.searchsorted(held, fraction - 1e-9)) + 1
    return Site(locations.pop(), Support(kinds.pop() if kinds else "coords", tuple(int(i) for i in order[:n])))
