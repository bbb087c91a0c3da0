"""Benchmark tasks, registered by name so users add their own without editing the library.

A task bundles a causal model, its target variables, the input encoding, a pair sampler with
counterfactual families, a backbone factory, a readout and the coarse site grid. Register one with::

    @register_task("my_task")
    class MyTask(Task): ...

and list its module (a dotted name or a ``.py`` path) under the spec's or the config's ``imports``.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch

from plotlib import backbones
from plotlib.causal import CausalModel
from plotlib.readout import BitsReadout, SoftmaxReadout
from plotlib.sites import Location

_REGISTRY: dict[str, type["Task"]] = {}


def register_task(name: str) -> Callable[[type["Task"]], type["Task"]]:
    def wrap(cls: type["Task"]) -> type["Task"]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_tasks() -> list[str]:
    """Every registered task name: the built-in ones (every module of this package, so a new built-in
    task is one new file) and those registered by imported user modules."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return sorted(_REGISTRY)


def import_modules(entries: Iterable[str]) -> None:
    """Import user modules (so their ``@register_task`` runs): a dotted module name, or the path of a
    ``.py`` file, whose folder is put on ``sys.path`` so the file's own imports of its neighbours work.
    Raises ImportError naming the entry."""
    for entry in entries:
        if entry.endswith(".py"):
            path = Path(entry).expanduser().resolve()
            if not path.is_file():
                raise ImportError(f"no such file: {path}")
            if str(path.parent) not in sys.path:
                sys.path.insert(0, str(path.parent))
            entry = path.stem
        try:
            importlib.import_module(entry)
        except ImportError as err:
            raise ImportError(f"cannot import {entry!r}: {err}") from err


def task_class(name: str, imports: Iterable[str] = ()) -> type["Task"]:
    """The Task subclass a spec's ``task`` names: a registered name (built in, or registered by one of
    ``imports``), or ``package.module:Class``. Raises ValueError or ImportError saying what is wrong."""
    import_modules(imports)
    if ":" in name:
        module, _, cls_name = name.partition(":")
        try:
            import_modules([module])
        except ImportError as err:
            raise ValueError(str(err)) from err
        cls = getattr(sys.modules[module], cls_name, None)
        if cls is None:
            raise ValueError(f"module {module!r} has no class {cls_name!r}")
    elif name not in available_tasks():
        raise ValueError(f"unknown task {name!r}; registered: {available_tasks()} (a task of your own: list its module "
                         f"under the spec's 'imports', or write 'package.module:Class')")
    else:
        cls = _REGISTRY[name]
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(f"{name!r} is not a plotlib.tasks.Task subclass")
    return cls


def make_task(name: str, options: dict[str, Any], seed: int, backbone_options: dict[str, Any] | None = None,
              imports: Iterable[str] = ()) -> "Task":
    """Instantiate the task ``name`` (see :func:`task_class`; ``imports`` are imported first).
    ``backbone_options`` (the spec's ``backbone`` section) is there for tasks whose inputs depend on
    the model, such as a pretrained LM's tokenizer."""
    task = task_class(name, imports)(options, seed)
    task.backbone_options = dict(backbone_options or {})
    return task


class Task(ABC):
    """What a benchmark case must provide. Inputs travel as DataFrames of input-variable columns."""

    name: str = ""
    causal_model: CausalModel
    targets: tuple[str, ...]
    readout: SoftmaxReadout | BitsReadout

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        self.options = dict(options)
        self.seed = seed
        self.backbone_options: dict[str, Any] = {}

    @abstractmethod
    def sample_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        """``n`` factual inputs (one column per input variable), e.g. for backbone training."""

    @abstractmethod
    def sample_pairs(self, rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """``n`` (base, source) input pairs and the counterfactual family of each pair."""

    def bank_pairs(self, split: str, sizes: dict[str, int], rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """The (base, source) pairs and families of bank ``split``; ``sizes`` is the spec's ``banks``
        section. By default ``sizes[split]`` independent draws of :meth:`sample_pairs`; tasks whose
        banks partition a finite input set override this."""
        return self.sample_pairs(rng, sizes[split])

    def training_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        """A batch of inputs to train the backbone on: :meth:`sample_inputs` unless the task trains on a
        wider distribution (a curriculum of easier cases); factual accuracy is still measured on
        :meth:`evaluation_inputs`."""
        return self.sample_inputs(rng, n)

    def evaluation_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        """Held-out inputs for factual accuracy: ``n`` fresh samples unless the task enumerates all."""
        return self.sample_inputs(rng, n)

    @abstractmethod
    def encode(self, inputs: pd.DataFrame) -> torch.Tensor:
        """Backbone input tensor for a frame of inputs."""

    @abstractmethod
    def label(self, output_value: Any) -> int:
        """Integer label (class index or bit mask) of a causal-model output value."""

    @abstractmethod
    def build_backbone(self, options: dict[str, Any], seed: int) -> torch.nn.Module:
        """A fresh, seeded backbone exposing the :class:`plotlib.backbones.Backbone` interface."""

    @abstractmethod
    def coarse_locations(self, backbone: torch.nn.Module) -> list[Location]:
        """The Stage A candidate locations, in network order."""

    def planned_locations(self, backbone_options: dict[str, Any], seed: int) -> list[Location]:
        """The coarse locations a backbone built from ``backbone_options`` will have, before any training
        (the workflow fans Full DAS out over them). By default: build an untrained one and ask it."""
        return self.coarse_locations(self.build_backbone(backbone_options, seed))

    def planned_widths(self, backbone_options: dict[str, Any], seed: int) -> dict[str, int]:
        """The width of each coarse location, before any training (to check a spec's Stage B and DAS sizes
        before any job runs). By default: build an untrained backbone and ask it."""
        backbone = self.build_backbone(backbone_options, seed)
        return {loc.id: backbone.width(loc.id) for loc in self.coarse_locations(backbone)}

    def save_backbone(self, model: torch.nn.Module, path: str) -> None:
        """Write a trained backbone to ``path`` (atomically)."""
        backbones.save_backbone(model, path)

    def load_backbone(self, path: str) -> torch.nn.Module:
        """Load what :meth:`save_backbone` wrote (or a user's checkpoint), frozen and in eval mode."""
        return backbones.load_backbone(path)

    def planted(self) -> dict[str, Any]:
        """Ground truth where the task knows it: each target's :class:`plotlib.tasks.planted.Planted`
        location, units and decoys. Empty for tasks whose backbones learn their own solution."""
        return {}

    def outputs(self, inputs: pd.DataFrame, interventions: dict[str, Any] | None = None) -> np.ndarray:
        """Integer labels of the causal model's output for each row of ``inputs``."""
        rows = inputs[list(self.causal_model.inputs)].to_dict("records")
        return np.array([self.label(self.causal_model.run(r, interventions)[self.causal_model.output]) for r in rows])
