"""Typed intervention sites with one canonical string id that parses back.

A site is a *location* (a named activation point of the backbone, optionally at a token
position or timestep) plus a *support* inside that vector: every coordinate, a set of
native coordinates, or a span of basis components (for example PCA components).

Canonical id grammar (no regex scraping of free-form names anywhere else):
    <layer>[@<position>]/<support>
    support := all | coords[<i>,<j>,...] | coords[<a>:<b>] | basis[<a>:<b>]
Examples: ``h1/all``, ``h1/coords[3]``, ``h1/coords[0:8]``, ``L2@last/basis[0:4]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SupportKind = Literal["all", "coords", "basis"]
_FORBIDDEN = set("/@[]:,")


@dataclass(frozen=True, order=True)
class Location:
    """A named activation point, optionally at a position (token or timestep)."""

    layer: str
    position: str | None = None

    def __post_init__(self) -> None:
        for part in (self.layer, self.position):
            if part is not None and (not part or _FORBIDDEN & set(part)):
                raise ValueError(f"invalid location part {part!r}: must be non-empty without {sorted(_FORBIDDEN)}")

    @property
    def id(self) -> str:
        return self.layer if self.position is None else f"{self.layer}@{self.position}"

    @classmethod
    def parse(cls, text: str) -> "Location":
        layer, sep, position = text.partition("@")
        return cls(layer, position if sep else None)


@dataclass(frozen=True, order=True)
class Support:
    """Which part of a location's vector a site covers.

    ``coords`` holds native coordinate indices; ``basis`` holds component indices of a
    basis named per location (the basis matrix itself travels with the handle, not the id).
    """

    kind: SupportKind = "all"
    indices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("all", "coords", "basis"):
            raise ValueError(f"unknown support kind {self.kind!r}")
        if self.kind == "all" and self.indices:
            raise ValueError("support 'all' takes no indices")
        if self.kind != "all":
            if not self.indices:
                raise ValueError(f"support {self.kind!r} needs at least one index")
            if any(i < 0 for i in self.indices) or len(set(self.indices)) != len(self.indices):
                raise ValueError(f"support indices must be distinct and >= 0, got {self.indices}")
            object.__setattr__(self, "indices", tuple(sorted(int(i) for i in self.indices)))

    @property
    def id(self) -> str:
        if self.kind == "all":
            return "all"
        idx = self.indices
        if len(idx) > 1 and idx == tuple(range(idx[0], idx[-1] + 1)):
            body = f"{idx[0]}:{idx[-1] + 1}"
        else:
            body = ",".join(str(i) for i in idx)
        return f"{self.kind}[{body}]"

    @classmethod
    def parse(cls, text: str) -> "Support":
        if text == "all":
            return cls()
        kind, sep, rest = text.partition("[")
        if not sep or not rest.endswith("]") or kind not in ("coords", "basis"):
            raise ValueError(f"cannot parse support {text!r}")
        body = rest[:-1]
        if ":" in body:
            start, stop = (int(x) for x in body.split(":"))
            indices = tuple(range(start, stop))
        else:
            indices = tuple(int(x) for x in body.split(","))
        return cls(kind, indices)  # type: ignore[arg-type]

    def size(self, width: int) -> int:
        return width if self.kind == "all" else len(self.indices)


@dataclass(frozen=True, order=True)
class Site:
    """A location plus a support; hashable, ordered, and round-trips through ``id``."""

    location: Location
    support: Support = Support()

    @property
    def id(self) -> str:
        return f"{self.location.id}/{self.support.id}"

    @classmethod
    def parse(cls, text: str) -> "Site":
        loc, sep, sup = text.partition("/")
        if not sep:
            raise ValueError(f"cannot parse site id {text!r}: expected '<location>/<support>'")
        return cls(Location.parse(loc), Support.parse(sup))

    def columns(self) -> dict[str, object]:
        """The id's parts as separate table columns."""
        return {
            "site": self.id,
            "site_layer": self.location.layer,
            "site_position": self.location.position,
            "site_support": self.support.kind,
            "site_indices": ",".join(map(str, self.support.indices)),
        }

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.id


def neuron_sites(location: Location, width: int) -> list[Site]:
    """One site per native coordinate of a location."""
    return [Site(location, Support("coords", (i,))) for i in range(width)]


def coordinate_groups(location: Location, width: int, group: int) -> list[Site]:
    """Contiguous native coordinate blocks of a given size (the last may be shorter)."""
    if group <= 0:
        raise ValueError("group size must be positive")
    return [
        Site(location, Support("coords", tuple(range(start, min(start + group, width)))))
        for start in range(0, width, group)
    ]
