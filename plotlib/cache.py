"""Activation cache: base and source activations of a bank at every coarse location, computed once
and memory-mapped back (safetensors), so no later stage re-runs sources."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from plotlib.banks import bank_inputs
from plotlib.io import atomic_path
from plotlib.sites import Location
from plotlib.tasks import Task


@torch.no_grad()
def capture(backbone: nn.Module, x: torch.Tensor, layers: Iterable[str], batch_size: int = 4096) -> dict[str, torch.Tensor]:
    """Tap outputs (and ``logits``) of one plain forward pass, in batches."""
    layers = list(layers)
    store: dict[str, list[torch.Tensor]] = {name: [] for name in [*layers, "logits"]}
    hooks = [
        backbone.taps[name].register_forward_hook(lambda _m, _i, out, name=name: store[name].append(out.detach().clone()))
        for name in layers
    ]
    try:
        for start in range(0, x.shape[0], batch_size):
            store["logits"].append(backbone(x[start:start + batch_size]))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(parts) for name, parts in store.items()}


def cache_key(role: str, name: str) -> str:
    return f"{role}/{name}"


STREAM = "stream"  # cache name prefix of a full residual stream (n, T, d), which positioned locations resume from


def capture_locations(backbone: nn.Module, x, locations: list[Location], streams: bool = True,
                      dtype: torch.dtype | None = None, batch_size: int = 256) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Activations (n, d) at each location (by id) plus ``logits``, and the streams patching resumes
    from: none for plain taps; for token-positioned locations (a transformer's residual stream) the
    full stream (n, T, d) of every layer involved, by layer name (``streams=False``: none, e.g. for
    sources, which are only read at their locations). Transformers run ``batch_size`` prompts at a time
    and every batch is stored at once in ``dtype`` (default: the model's), so no full-precision copy of
    the whole bank's streams is ever held."""
    if all(loc.position is None for loc in locations):
        return capture(backbone, x, [loc.id for loc in locations]), {}
    from plotlib.lm import read_position  # transformers only where a transformer runs

    layers = list(dict.fromkeys(loc.layer for loc in locations))
    n, acts, kept = len(x), {}, {}
    for start in range(0, n, batch_size):
        xb = x[start:start + batch_size]
        got = backbone.capture(xb, layers, batch_size=batch_size)
        parts = {loc.id: read_position(got[loc.layer], xb.positions[loc.position]) for loc in locations}
        parts["logits"] = got["logits"]
        for name, value in parts.items():
            _fill(acts, name, value, dtype if name != "logits" else None, n, start)
        for layer in layers if streams else ():
            _fill(kept, layer, got[layer], dtype, n, start)
    return acts, kept


def _fill(buffers: dict[str, torch.Tensor], name: str, value: torch.Tensor, dtype: torch.dtype | None, n: int, start: int) -> None:
    """Write one batch's rows into ``buffers[name]`` (n, ...), allocated in ``dtype`` at the first batch."""
    if name not in buffers:
        buffers[name] = torch.empty((n, *value.shape[1:]), dtype=dtype or value.dtype)
    buffers[name][start:start + value.shape[0]] = value.detach().to("cpu", buffers[name].dtype)


#: storage dtypes of an activation cache (spec key ``cache.dtype``)
CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cache_bytes(n: int, locations: list[Location], widths: dict[str, int], tokens: int, stream_width: int | None,
                dtype: str = "float32") -> int:
    """Bytes one bank's cache takes: base and source activations at every location, and (transformers,
    ``stream_width`` given) the bases' full streams of ``tokens`` positions at every layer involved."""
    per_value = torch.finfo(CACHE_DTYPES[dtype]).bits // 8
    values = 2 * n * sum(widths[loc.id] for loc in locations)
    if stream_width is not None:
        values += n * tokens * stream_width * len({loc.layer for loc in locations if loc.position is not None})
    return values * per_value


def build_cache(task: Task, backbone: nn.Module, bank: pd.DataFrame, locations: list[Location], path: str | os.PathLike,
                dtype: str = "float32", batch_size: int = 256) -> None:
    """Capture base and source activations of ``bank`` at ``locations`` (and the bases' resume
    context), stored in ``dtype`` (logits stay float32), and write them atomically."""
    tensors = {}
    for role in ("base", "source"):
        acts, streams = capture_locations(backbone, task.encode(bank_inputs(bank, role)), locations,
                                          streams=role == "base", dtype=CACHE_DTYPES[dtype], batch_size=batch_size)
        acts.update({f"{STREAM}/{layer}": value for layer, value in streams.items()})
        for name, value in acts.items():
            if not torch.isfinite(value).all():
                raise FloatingPointError(f"non-finite {role} activations at {name!r} while caching {path}")
            tensors[cache_key(role, name)] = value.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"n_pairs": str(len(bank)), "locations": ",".join(l.id for l in locations),
                                               "dtype": dtype})


@dataclass
class CachedBank:
    """A bank with its encoded base inputs, labels, and lazily memory-mapped cached activations."""

    task: Task
    frame: pd.DataFrame
    cache_path: Path
    x_base: torch.Tensor = field(init=False)
    _loaded: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _ready: tuple = field(default=(None, None, None), init=False, repr=False)

    def __post_init__(self) -> None:
        self.x_base = self.task.encode(bank_inputs(self.frame, "base"))
        self.cache_path = Path(self.cache_path)
        if not self.cache_path.exists():
            raise FileNotFoundError(f"activation cache not found: {self.cache_path}")
        with safe_open(str(self.cache_path), framework="pt") as f:
            n = int(f.metadata()["n_pairs"])
            streams = [k.split("/", 1)[1] for k in f.keys() if k.startswith(cache_key("base", STREAM + "/"))]
        if n != len(self.frame):
            raise ValueError(f"{self.cache_path} holds {n} pairs but the bank has {len(self.frame)}")
        if streams:  # a transformer resumes from the base's cached residual stream
            self.x_base = self.x_base.with_streams({s.split("/", 1)[1]: self.acts("base", s) for s in streams})

    @classmethod
    def load(cls, task: Task, bank_path: str | os.PathLike, cache_path: str | os.PathLike) -> "CachedBank":
        return cls(task, pd.read_parquet(bank_path), Path(cache_path))

    def acts(self, role: str, name: str) -> torch.Tensor:
        key = cache_key(role, name)
        if key not in self._loaded:
            with safe_open(str(self.cache_path), framework="pt") as f:
                if key not in f.keys():
                    raise KeyError(f"{self.cache_path} has no activations {key!r}; it holds {sorted(f.keys())}")
                value = f.get_tensor(key)
            # streams stay in the cache's storage dtype (the backbone casts each batch it runs); activations
            # at locations are small and enter float32 arithmetic, so they are read back as float32
            self._loaded[key] = value if name.startswith(STREAM + "/") else value.float()
        return self._loaded[key]

    def inputs_at(self, backbone: nn.Module, location: str):
        """The base inputs, ready for ``backbone`` to resume at ``location``: with its prefix context where
        it offers one (:meth:`plotlib.lm.CausalLMBackbone.resume_context`). The latest one is kept, since
        callers work location by location."""
        prepare = getattr(backbone, "resume_context", None)
        if prepare is None:
            return self.x_base
        if self._ready[:2] != (id(backbone), location):
            x = self.x_base
            if hasattr(x, "keep"):  # a transformer's inputs carry only the stream patched there: nothing else is tiled
                x = x.keep(location.partition("@")[0])
            self._ready = (id(backbone), location, prepare(location, x))
        return self._ready[2]

    def base_acts(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        return {name: self.acts("base", name) for name in names}

    def labels(self, variable: str) -> torch.Tensor:
        return torch.tensor(self.frame[f"cf_{variable}"].to_numpy())

    def sensitive(self, variable: str) -> torch.Tensor:
        return torch.tensor(self.frame[f"sensitive_{variable}"].to_numpy())

    @property
    def y_base(self) -> torch.Tensor:
        return torch.tensor(self.frame["y_base"].to_numpy())
