"""Interchange interventions through forward hooks on backbone taps.

On a site's support, in the site's basis: ``h <- h + c * P(h_source - h)`` with c = gain x weight
(docs/method.md §1). ``Subspace`` is that P: a coordinate mask or an orthonormal basis (PCA spans, DAS
rotations). Source activations always come from the cache; patching starts from the cached base
activation at the earliest edited location and runs only the later layers. Locations are addressed
by id: ``h1``, or ``L2@last`` for one token position of a transformer's residual stream.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import torch
from torch import nn

from plotlib.sites import Location, Site


@dataclass(frozen=True)
class Subspace:
    """The projection P of a site: a 0/1 coordinate ``mask`` (d,) or orthonormal ``basis`` (d, r), the
    basis optionally with ``weights`` (r,) in [0, 1] on its directions (Boundless DAS's soft mask)."""

    mask: torch.Tensor | None = None
    basis: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.mask is None) == (self.basis is None):
            raise ValueError("a Subspace is either a coordinate mask or a basis, exactly one")
        if self.weights is not None and self.basis is None:
            raise ValueError("weights apply to a basis' directions")

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            return delta * self.mask
        coords = delta @ self.basis  # also batched: bases (..., d, r) with deltas (..., n, d)
        return (coords if self.weights is None else coords * self.weights) @ self.basis.mT


@dataclass(frozen=True)
class Operator:
    """A general linear map M (d, d) on the difference: ``delta @ M``. A handle whose sites share one
    location collapses to one: M = sum_S coeff_S P_S, so many handles can share a stacked forward."""

    matrix: torch.Tensor

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        return delta @ self.matrix

    @classmethod
    def combine(cls, parts: Sequence[tuple[float, Subspace]], width: int) -> "Operator":
        matrix = torch.zeros(width, width)
        for coeff, sub in parts:
            matrix += coeff * (torch.diag(sub.mask) if sub.mask is not None else sub.basis @ sub.basis.T)
        return cls(matrix)


def site_subspace(site: Site, width: int, basis: torch.Tensor | None = None) -> Subspace:
    """The subspace a site covers; ``basis`` (d, m) is required for ``basis`` supports."""
    support = site.support
    if support.kind == "basis":
        if basis is None:
            raise ValueError(f"site {site.id} is a basis span but no basis was given for {site.location.id}")
        if max(support.indices) >= basis.shape[1]:
            raise ValueError(f"site {site.id} needs {max(support.indices) + 1} components, basis has {basis.shape[1]}")
        return Subspace(basis=basis[:, list(support.indices)])
    mask = torch.zeros(width) if support.kind == "coords" else torch.ones(width)
    if support.kind == "coords":
        if max(support.indices) >= width:
            raise ValueError(f"site {site.id} indexes past the width {width} of {site.location.id}")
        mask[list(support.indices)] = 1.0
    return Subspace(mask=mask)


@dataclass(frozen=True)
class Edit:
    """One site's part of an intervention: where, which subspace, how strongly, from which source."""

    location: Location
    subspace: Subspace
    coeff: float
    source: torch.Tensor  # source activation at ``location`` for each base in the batch


def interchange(h: torch.Tensor, source: torch.Tensor, project, coeff: float = 1.0) -> torch.Tensor:
    """The interchange of docs/method.md §1, ``h + coeff * P(source - h)``, with ``project`` the map P: the one
    place this formula is written (sweeps, handles, DAS and the warm-up all call it)."""
    return h + coeff * project(source - h)


def _apply_all(h: torch.Tensor, edits: Sequence[Edit]) -> torch.Tensor:
    """Apply several edits at one tap in the same pass: each reads the unpatched activation, and all
    take the same source activation (the source's at that location)."""
    source = edits[0].source
    if any(e.source is not source for e in edits[1:]):
        raise ValueError(f"edits at {edits[0].location.id} must share one source activation")
    return interchange(h, source, lambda delta: sum(e.coeff * e.subspace.project(delta) for e in edits))


def rows_of(edits: Sequence[Edit], rows: slice) -> list[Edit]:
    """The edits for the bases in ``rows`` only; edits that shared a source activation still share one."""
    sliced: dict[int, torch.Tensor] = {}
    return [replace(e, source=sliced.setdefault(id(e.source), e.source[rows])) for e in edits]


@contextmanager
def hooked(backbone: nn.Module, edits_by_layer: dict[str, list[Edit]]) -> Iterator[None]:
    """Forward hooks that rewrite tap outputs with the given edits while the block runs."""
    handles = []
    for layer, edits in edits_by_layer.items():
        handles.append(backbone.taps[layer].register_forward_hook(lambda _m, _i, out, edits=edits: _apply_all(out, edits)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_with_edits(
    backbone: nn.Module,
    x,
    edits: Sequence[Edit],
    base_acts: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits of the backbone on inputs ``x`` with all ``edits`` applied in one forward pass.

    With ``base_acts`` (cached base activation per location id), the pass starts at the earliest
    edited location instead of the input, so only the layers after it run.
    """
    by_location: dict[str, list[Edit]] = defaultdict(list)
    for edit in edits:
        by_location[edit.location.id].append(edit)
    if not by_location:
        return backbone(x)
    if len(by_location) == 1 and base_acts is not None and next(iter(by_location)) in base_acts:
        (location, here), = by_location.items()
        return backbone.resume(location, _apply_all(base_acts[location], here), x)
    if not hasattr(backbone, "taps"):
        raise NotImplementedError(f"edits at several token-positioned locations at once ({sorted(by_location)}) are not "
                                  "supported yet: use handles with one location (plot.top_k: [1])")
    order = list(backbone.taps)
    first = min(by_location, key=order.index)
    if base_acts is None or first not in base_acts:
        with hooked(backbone, by_location):
            return backbone(x)
    start = _apply_all(base_acts[first], by_location.pop(first))
    with hooked(backbone, by_location):
        return backbone.resume(first, start, x)


def forward_rows(backbone: nn.Module, x) -> int:
    """The most stacked rows one forward of ``backbone`` on inputs like ``x`` should hold."""
    if hasattr(backbone, "rows_for") and x is not None:
        return backbone.rows_for(x)
    return getattr(backbone, "max_batch_rows", 65536)


def repeat_rows(x, k: int):
    """The batch ``x`` (a tensor, or inputs with a ``repeat_rows`` method) tiled ``k`` times."""
    if isinstance(x, torch.Tensor):
        return x.repeat(k, *([1] * (x.dim() - 1)))
    return x.repeat_rows(k)


def sweep_single_sites(
    backbone: nn.Module,
    location: str,
    base_h: torch.Tensor,
    source_h: torch.Tensor,
    subspaces: Sequence[Subspace | Operator],
    x=None,
    coeff: float = 1.0,
    max_rows: int | None = None,
) -> torch.Tensor:
    """Logits (n_sites, B, out) for one interchange per subspace (or operator) at ``location``, many
    per forward: the patched activations are stacked in the batch dimension and only the later layers
    run. At most ``max_rows`` stacked rows per forward (default: :func:`forward_rows`)."""
    n, batch = len(subspaces), base_h.shape[0]
    rows = max_rows or forward_rows(backbone, x)
    if batch > rows:  # more bases than one forward holds: their rows are split too
        return torch.cat([sweep_single_sites(backbone, location, base_h[i:i + rows], source_h[i:i + rows], subspaces,
                                             None if x is None else x[i:i + rows], coeff, rows)
                          for i in range(0, batch, rows)], dim=1)
    outs = []
    per_chunk = max(1, rows // batch)
    for start in range(0, n, per_chunk):
        chunk = subspaces[start:start + per_chunk]
        patched = torch.stack([interchange(base_h, source_h, s.project, coeff) for s in chunk])
        flat = patched.reshape(len(chunk) * batch, *base_h.shape[1:])
        x_rep = None if x is None else repeat_rows(x, len(chunk))
        outs.append(backbone.resume(location, flat, x_rep).reshape(len(chunk), batch, -1))
    return torch.cat(outs)
