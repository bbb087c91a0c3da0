"""Plan a transformer run before paying for it: the activation cache's size, and the time PLOT, Full DAS
and PLOT-DAS would take, for models of given depths and widths (docs/method.md §8 counts the same work).

Times are extrapolated from costs measured here: for each token position of the task, the seconds one row
takes through one decoder layer of a random Llama-style model of the wanted width (a resumed forward with
prefix reuse, as every stage runs it, and a forward with backward, as a DAS step runs it), plus the head.
Decoder layers of one model are alike, so a patch at layer l of a depth-L model costs (L - l) layers and the
head. The counts of patched rows follow the spec: one sweep of the fit bank per coarse location for PLOT's
signatures, each calibration handle on the calibration bank, and for DAS every (k, lr) cell's epochs over
the DAS training bank and its calibration pass. Not counted: coupling solves and the orthogonal maps' own
arithmetic (both small beside the forwards at these widths), and job start-up.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from plotlib.cache import cache_bytes
from plotlib.lm import read_position
from plotlib.methods import SOLVER_PARAMS
from plotlib.sites import Location
from plotlib.tasks import make_task


@dataclass(frozen=True)
class Costs:
    """CPU seconds per row, by token position: through one decoder layer without and with backward, and
    through the head alone (final norm and readout), measured at one width."""

    width: int
    layer: dict[str, float]
    layer_step: dict[str, float]
    head: dict[str, float]
    tokens: int  # prompt length of the task's encoded bank


def _seconds(fn, repeats: int = 3) -> float:
    """Least CPU seconds of ``repeats`` calls, after one warm-up call (this process's CPU time: run it on
    one thread, so that it counts the work, not the waiting)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def planning_task(spec: dict, seed: int = 0, log=print):
    """The spec's task, with its tokenizer where it can be had here: a pretrained model's own when it is a local
    directory, else the task's word-level one (a subword tokenizer makes longer prompts: more cache)."""
    backbone = spec["backbone"]
    if backbone.get("kind") == "pretrained" and not os.path.isdir(os.path.expanduser(backbone["pretrained"])):
        log(f"{backbone['pretrained']} is not a local directory: planning with the task's word-level tokenizer")
        backbone = {"kind": "transformer"}
    task = make_task(spec["task"], spec["task_options"], seed, backbone, spec["imports"])
    if not hasattr(task, "positions"):
        raise ValueError(f"plotlib plan covers transformer tasks (token positions); {spec['task']} has none")
    return task


def measure_costs(task, width: int, heads: int, depth: int = 2, rows: int = 32, seed: int = 0) -> Costs:
    """Per-row, per-layer costs at each of the task's positions on a random ``depth``-layer model of ``width``."""
    backbone = task.build_backbone({"kind": "transformer", "architecture": "llama", "layers": depth, "width": width,
                                    "heads": heads, "max_length": 128}, seed).eval().requires_grad_(False)
    x = task.encode(task.sample_inputs(np.random.default_rng(seed), rows))
    first, last = backbone.layer_names[0], backbone.layer_names[-1]
    x = x.with_streams(backbone.capture(x, [first, last]))
    layer, step, head = {}, {}, {}
    for position in task.positions:
        times = {}
        for name in (first, last):
            location = f"{name}@{position}"
            ready = backbone.resume_context(location, x.keep(name))
            h = read_position(x.streams[name], x.positions[position])
            with torch.no_grad():
                times[name] = _seconds(lambda: backbone.resume(location, h, ready))
            if name == first:
                def backward() -> None:
                    g = h.clone().requires_grad_(True)
                    backbone.resume(location, g, ready).sum().backward()
                times["step"] = _seconds(backward)
        head[position] = times[last] / rows
        layer[position] = max(times[first] - times[last], 0.0) / (rows * depth)
        step[position] = max(times["step"] - times[last], 0.0) / (rows * depth)
    return Costs(width, layer, step, head, x.input_ids.shape[1])


def _grid_size(section: dict, solver: str) -> int:
    """How many solver settings a coupling grid holds."""
    return math.prod(len(section[key]) for key in SOLVER_PARAMS[solver])


def estimate(spec: dict, positions: tuple[str, ...], spans: dict[str, int], targets: int, depth: int, costs: Costs) -> dict:
    """Cache size and PLOT / Full DAS / PLOT-DAS seconds for a depth-``depth`` model of ``costs.width``."""
    banks, das, plot = spec["banks"], spec["das"], spec["plot"]
    width = costs.width
    locations = [Location(f"L{i}" if i else "emb", p) for i in range(depth + 1) for p in positions]
    after = {loc.id: depth - i for i in range(depth + 1) for loc in locations[i * len(positions):(i + 1) * len(positions)]}
    widths = {loc.id: width * spans.get(loc.position, 1) for loc in locations}

    def forward(loc: Location) -> float:
        return after[loc.id] * costs.layer[loc.position] + costs.head[loc.position]

    def step(loc: Location) -> float:
        return after[loc.id] * costs.layer_step[loc.position] + costs.head[loc.position]

    mean_forward = float(np.mean([forward(loc) for loc in locations]))
    handles = _grid_size(plot, plot.get("solver", "sinkhorn")) * len(plot["gain"]) * (
        len(plot["top_k"]) + (plot.get("alternatives", 1) - 1))
    plot_s = (sum(banks["fit"] * forward(loc) for loc in locations)  # Stage A signatures: each location whole
              + targets * (handles * banks["calibration"] + banks["test"]) * mean_forward)

    def das_at(loc: Location) -> float:
        cells = len({min(k, widths[loc.id]) for k in das["dims"]}) * len(das["lrs"])
        return cells * (das["epochs"] * banks["das_train"] * step(loc) + banks["calibration"] * forward(loc))

    per_location = [das_at(loc) for loc in locations]
    full = targets * sum(per_location)
    guided = plot_s + targets * float(np.mean(per_location))
    cache = sum(cache_bytes(n, locations, widths, costs.tokens, width, spec["cache"]["dtype"]) for n in banks.values())
    return {"depth": depth, "width": width, "coarse sites": len(locations), "cache GB": cache / 1e9,
            "PLOT s": plot_s, "Full DAS s": full, "PLOT-DAS s": guided, "Full DAS / PLOT-DAS": full / guided}


def plan(spec: dict, depths: list[int], widths: list[int], heads: int | None = None, measure_depth: int = 2,
         rows: int = 32, seed: int = 0, log=print) -> pd.DataFrame:
    """The planning table: one row per (width, depth); costs measured once per width."""
    task = planning_task(spec, seed, log)
    out = []
    for width in widths:
        n_heads = heads or max(1, width // 64)
        log(f"measuring per-layer costs at width {width} ({measure_depth} layers, {n_heads} heads, {rows} rows)...")
        costs = measure_costs(task, width, n_heads, measure_depth, rows, seed)
        out += [estimate(spec, task.positions, task.spans, len(task.targets), depth, costs) for depth in depths]
    return pd.DataFrame(out)
