"""The stages of one (benchmark, seed) run, each a function the Snakemake rules call through the CLI.

Every stage reads files written by earlier stages, writes its outputs atomically, and records the
time of the algorithm itself as runtime rows (docs/method.md §8): each method is charged for what it needs
beyond the shared backbone, banks and activation cache.
"""
from __future__ import annotations

import itertools
import json
import logging
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from plotlib import banks as banks_mod
from plotlib import methods as methods_mod
from plotlib.cache import CachedBank, build_cache, cache_bytes, capture_locations
from plotlib.config import ConfigError
from plotlib.das import Cell, MaskSchedule, dimension_hint, evaluate_rotation, evaluate_rotations, initial_rotation, orthonormal, train_rotations
from plotlib.handles import Handle, candidate_handles, evaluate_handle, evaluate_handles, solver_params
from plotlib.io import atomic_path, read_json, write_json, write_parquet
from plotlib.layout import RunPaths
from plotlib.localization import METRICS as LOCALIZATION_METRICS
from plotlib.localization import localization
from plotlib.metrics import selection_score
from plotlib.patching import Subspace, interchange, site_subspace
from plotlib.methods import REFINE_GRIDS, SOLVER_PARAMS
from plotlib.refine import mass_support, native_group_sites, pca_basis, pca_span_sites, support_basis
from plotlib.sites import Location, Site, neuron_sites
from plotlib.tasks import make_task
from plotlib.timing import RuntimeLog
from plotlib.training import (UNTRAINED_KINDS, BelowAccuracyFloor, accuracy_floor_failure, chance_accuracy,
                              factual_accuracy, train_backbone)

log = logging.getLogger(__name__)

ACCURACY_COLUMNS = ["benchmark", "seed", "stage", "method", "variable", "split", "metric", "value", "n", "sites", "hyperparameters"]


@dataclass
class Run:
    """One (benchmark, seed): the resolved spec, its task, the file layout and a runtime log."""

    spec_path: str
    seed: int
    root: str
    _banks: dict[str, CachedBank] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        resolved = read_json(self.spec_path)
        self.spec, self.benchmark = resolved["spec"], resolved["name"]
        self.paths = RunPaths(self.root)
        self.runtime = RuntimeLog(self.benchmark, self.seed)
        self.task = make_task(self.spec["task"], self.spec["task_options"], self.seed, self.spec["backbone"], self.spec["imports"])

    @cached_property
    def backbone(self) -> torch.nn.Module:
        """The trained backbone, warmed up (one forward and backward pass) so that no stage timer
        charges torch's one-time kernel and autograd initialization to the method that happens first."""
        model = self.task.load_backbone(self.paths.model)
        if self.spec["batching"]["rows"] is not None:  # the spec's forward size replaces the backbone's default
            model.max_batch_rows, model.stream_values = self.spec["batching"]["rows"], None
        x = self.task.encode(self.task.sample_inputs(np.random.default_rng(0), 8))
        first = self.task.coarse_locations(model)[0]
        with torch.enable_grad():  # the DAS path: a batched orthogonal map, a resumed suffix, backward
            params, base = initial_rotation(model.width(first.id), 1, 0)
            params.requires_grad_(True)
            acts, streams = capture_locations(model, x, [first])
            if streams:
                x = x.with_streams(streams)
            if hasattr(model, "resume_context"):  # and the prefix-reuse path, where the backbone has one
                x = model.resume_context(first.id, x)
            h = acts[first.id]
            q = orthonormal(params[None], base[None])
            patched = interchange(h[None], h.roll(1, 0)[None], Subspace(basis=q).project)[0]
            model.resume(first.id, patched, x).sum().backward()
        return model

    @cached_property
    def locations(self):
        return self.task.coarse_locations(self.backbone)

    @cached_property
    def widths(self) -> dict[str, int]:
        return {loc.id: self.backbone.width(loc.id) for loc in self.locations}

    @cached_property
    def stage_a_sites(self) -> list[Site]:
        """Stage A candidate sites (``plot.sites``): each coarse location whole (``locations``), or every
        neuron of every coarse location (``neurons``: one stage suffices in small MLPs, docs/method.md §5)."""
        if self.spec["plot"]["sites"] == "locations":
            return [Site(loc) for loc in self.locations]
        return [s for loc in self.locations for s in neuron_sites(loc, self.widths[loc.id])]

    def bank(self, split: str) -> CachedBank:
        """A bank with its cache, loaded once per job."""
        if split not in self._banks:
            self._banks[split] = CachedBank.load(self.task, self.paths.bank(split), self.paths.cache(split))
        return self._banks[split]

    def write_runtime(self, job: str, location: str | None = None) -> None:
        """Write the rows timed since the last write to ``job``'s runtime file (each row lands once)."""
        write_parquet(self.runtime.frame(), self.paths.runtime(job, location))
        self.runtime.rows.clear()

    def _rows(self, stage: str, method: str, variable: str, split: str, values: dict, counts: dict, sites: str,
              hparams: dict) -> list[dict]:
        """Long-table rows (one per metric of ``values``) in the layout of ACCURACY_COLUMNS."""
        return [{"benchmark": self.benchmark, "seed": self.seed, "stage": stage, "method": method, "variable": variable,
                 "split": split, "metric": m, "value": v, "n": counts[m], "sites": sites,
                 "hyperparameters": json.dumps(hparams, sort_keys=True)} for m, v in values.items()]

    def accuracy_rows(self, stage: str, method: str, variable: str, split: str, scores: dict, sites: str, hparams: dict) -> list[dict]:
        n = {"sensitive": scores["n_sensitive"], "invariant": scores["n_invariant"]}
        n["combined"] = n["sensitive"] + n["invariant"]
        return self._rows(stage, method, variable, split, {m: scores[m] for m in ("sensitive", "invariant", "combined")}, n, sites, hparams)

    def localization_rows(self, stage: str, method: str, variable: str, spans: dict[str, torch.Tensor], sites: str,
                          hparams: dict) -> list[dict]:
        """Rows of :mod:`plotlib.localization` metrics (split ``planted``) when the task knows where
        ``variable`` was planted; none otherwise. ``n`` is the number of planted units."""
        planted = self.task.planted().get(variable)
        if planted is None:
            return []
        scores = localization(planted, spans)
        values = {m: scores[m] for m in LOCALIZATION_METRICS}
        return self._rows(stage, method, variable, "planted", values, dict.fromkeys(values, planted.units.shape[1]), sites, hparams)


def handle_spans(handle: Handle, widths: dict[str, int], bases: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Orthonormal columns spanning a handle's sites, per location."""
    by_location: dict[str, list[Site]] = {}
    for site in handle.sites:
        by_location.setdefault(site.location.id, []).append(site)
    return {loc: support_basis(sites, widths[loc], bases.get(loc)) for loc, sites in by_location.items()}


def coarse_location_ids(spec: dict, seed: int) -> list[str]:
    """Coarse location ids of a benchmark, known before training (for the DAG's Full DAS fan-out)."""
    task = make_task(spec["task"], spec["task_options"], seed, spec["backbone"], spec["imports"])
    return [loc.id for loc in task.planned_locations(spec["backbone"], seed)]


def check_site_sizes(spec: dict, spec_name: str) -> None:
    """Stage B group, prefix and band sizes must fit the narrowest coarse location (Stage B may pick it),
    and DAS dimensions the widest (a k is capped at each narrower site's width). Raises ConfigError naming
    the key, before any job runs."""
    task = make_task(spec["task"], spec["task_options"], 0, spec["backbone"], spec["imports"])
    widths = task.planned_widths(spec["backbone"], 0)
    narrow, wide = min(widths, key=widths.get), max(widths, key=widths.get)
    checks = [("refine", key, narrow) for key in ("native_groups", "pca_prefixes", "pca_bands")] + [("das", "dims", wide)]
    for section, key, location in checks:
        too_big = [v for v in (spec.get(section) or {}).get(key, []) if v > widths[location]]
        if too_big:
            raise ConfigError(f"benchmark spec {spec_name} key '{section}.{key}': {too_big} exceed the "
                              f"{'narrowest' if location == narrow else 'widest'} coarse location ({location}, "
                              f"{widths[location]} wide)")


def derived_seed(*parts: object) -> int:
    """A stable 31-bit seed from the run seed and the names of what is being seeded."""
    return zlib.crc32("|".join(map(str, parts)).encode()) & 0x7FFFFFFF


# --- shared stages -------------------------------------------------------------------------------

def stage_train(run: Run) -> None:
    """Train the backbone (or load the given checkpoint, a pretrained model, or the task's constructed
    one) and record its factual accuracy. A backbone below ``training.min_accuracy``, or no better than
    chance, stops the run (``training.below_floor: stop``) or has its seed marked excluded (``exclude``)."""
    torch.manual_seed(run.seed)
    options = run.spec["backbone"]
    held_out = run.task.evaluation_inputs(np.random.default_rng([run.seed, 31337]), run.spec["training"]["eval_size"])
    with run.runtime.stage(methods_mod.SHARED, "train_backbone"):
        if options.get("checkpoint") or options.get("kind") in UNTRAINED_KINDS:
            model = (run.task.load_backbone(options["checkpoint"]) if options.get("checkpoint")
                     else run.task.build_backbone(options, run.seed).eval().requires_grad_(False))
            info = {"factual_accuracy": factual_accuracy(run.task, model, held_out), "steps": 0,
                    "checkpoint": options.get("checkpoint") or options.get("pretrained") or f"constructed for seed {run.seed}"}
        else:
            model, info = train_backbone(run.task, run.spec, run.seed)
    # a backbone below the floor stops the run (its model and metrics are kept); with below_floor: exclude
    # the later stages still run and the report leaves the seed out of its tables, saying why
    info["chance"] = chance_accuracy(run.task, held_out)
    failure = accuracy_floor_failure(info, run.spec["training"]["min_accuracy"])
    stop = failure and run.spec["training"]["below_floor"] == "stop"
    if failure and not stop:
        info["excluded"] = f"{failure}; its seed is excluded from every table"
        log.warning("%s seed %d: %s", run.benchmark, run.seed, info["excluded"])
    run.task.save_backbone(model, run.paths.model)
    write_json(info, run.paths.train_metrics)
    run.write_runtime("train")
    if stop:
        raise BelowAccuracyFloor(f"{run.benchmark} seed {run.seed}: {failure}. The run stops here, since every later "
                                 f"figure would describe a model that does not do the task. To go on anyway, set "
                                 f"training.below_floor: exclude; the report then leaves this seed out and says why.")


def stage_banks(run: Run) -> None:
    with run.runtime.stage(methods_mod.SHARED, "banks"):
        for split in banks_mod.SPLITS:
            bank = banks_mod.make_bank(run.task, run.spec["banks"], run.seed, split)
            write_parquet(bank, run.paths.bank(split))
    run.write_runtime("banks")


def stage_cache(run: Run, splits: Iterable[str]) -> None:
    """Cache each bank's activations, each timed and written on its own: the fit and DAS training banks'
    caches are charged to the family that needs them, the calibration and test caches are shared
    (docs/method.md §8)."""
    cfg = run.spec["cache"]
    for split in splits:
        bank = pd.read_parquet(run.paths.bank(split))
        check_cache_budget(run, split, bank)
        with run.runtime.stage(methods_mod.CACHE_CHARGED_TO.get(split, methods_mod.SHARED), f"cache_{split}"):
            build_cache(run.task, run.backbone, bank, run.locations, run.paths.cache(split), cfg["dtype"],
                        run.spec["batching"]["cache_prompts"])
        run.write_runtime(f"cache_{split}")


def check_cache_budget(run: Run, split: str, bank: pd.DataFrame) -> None:
    """Log the bytes ``split``'s cache will take, and stop before caching if they exceed ``cache.budget_gb``."""
    cfg, n = run.spec["cache"], len(bank)
    x = run.task.encode(banks_mod.bank_inputs(bank, "base"))
    tokens = x.input_ids.shape[1] if hasattr(x, "input_ids") else 0  # transformers cache whole streams of T tokens
    stream_width = run.backbone.width(run.locations[0].layer) if tokens else None
    size = cache_bytes(n, run.locations, run.widths, tokens, stream_width, cfg["dtype"])
    log.info("%s seed %d: the %s bank's cache will take %.3f GB (%d pairs, %s)", run.benchmark, run.seed, split, size / 1e9,
             n, cfg["dtype"])
    if cfg["budget_gb"] is not None and size > cfg["budget_gb"] * 1e9:
        raise MemoryError(f"{run.benchmark} seed {run.seed}: the {split} bank's activation cache would take {size / 1e9:.2f} GB, "
                          f"over cache.budget_gb = {cfg['budget_gb']} in the benchmark spec. Lower banks.{split}, store it "
                          f"in half precision (cache.dtype: bfloat16), or raise the budget.")


# --- PLOT: signatures, couplings, calibrated handles (Stage A on the coarse grid, Stage B inside) ---

def _grid_sites(run: Run, grid: str) -> tuple[dict[str, list[Site]], dict[str, torch.Tensor]]:
    """Each variable's candidate sites on ``grid`` and the bases they refer to (by location id).

    ``coarse``: the Stage A sites, shared by every variable. ``native`` / ``pca``: Stage B sites inside
    the location of the variable's PLOT handle, with PCA fitted on the fit bank's activations there.
    """
    if grid == "coarse":
        return {v: run.stage_a_sites for v in run.task.targets}, {}
    cfg = run.spec["refine"]
    handles = read_json(run.paths.handles("PLOT"))
    located = {v: guided_location(run, Handle.from_json(handles[v]["handle"])) for v in run.task.targets}
    bases = {}
    if grid == "pca":
        fit = run.bank("fit")
        for location in sorted(set(located.values())):
            bases[location] = pca_basis(torch.cat([fit.acts("base", location), fit.acts("source", location)]))
    sites = {}
    for variable, location in located.items():
        loc, width = Location.parse(location), run.widths[location]
        sites[variable] = (native_group_sites(loc, width, cfg["native_groups"]) if grid == "native"
                           else pca_span_sites(loc, width, cfg["pca_prefixes"], cfg["pca_bands"]))
    return sites, bases


def stage_signatures(run: Run, grid: str = "coarse") -> None:
    """Abstract and neural output-effect signatures on the fit bank, and their cost, on one site grid.
    Stage B sites outside a variable's own location are marked not ``allowed`` for it."""
    from plotlib.signatures import abstract_effects, active_rows, cost_matrix, neural_effects, signature  # POT: outside the timer

    cfg = run.spec["signatures"]
    charged = methods_mod.SIGNATURES if grid == "coarse" else REFINE_GRIDS[grid]
    with run.runtime.stage(charged, "signatures"):  # Stage B: the PCA fit too, charged to PLOT-PCA
        per_variable, bases = _grid_sites(run, grid)
        sites = list(dict.fromkeys(s for v in run.task.targets for s in per_variable[v]))
        fit = run.bank("fit")
        subspaces = [site_subspace(s, run.widths[s.location.id], bases.get(s.location.id)) for s in sites]
        families = fit.frame["family"].tolist()
        effects = neural_effects(run.backbone, fit, sites, subspaces)
        neural = signature(effects, families, cfg["aggregate"], cfg["normalize"])
        abstract = signature(torch.stack([abstract_effects(fit, v) for v in run.task.targets]), families, cfg["aggregate"], cfg["normalize"])
        cost = cost_matrix(abstract, neural, cfg["cost"])
        # a site whose interchange changes no output on the fit bank (a dead neuron, a PCA direction the
        # data never varies along) is inert: it cannot carry a variable, so it is no candidate
        active = active_rows(effects)
        own = {v: set(per_variable[v]) for v in run.task.targets}
        allowed = np.array([[s in own[v] for s in sites] for v in run.task.targets]) & active
        for v, row in zip(run.task.targets, allowed):
            if not row.any():
                raise ValueError(f"no active candidate site for {v} on grid {grid!r}: every interchange there is inert")
    with atomic_path(run.paths.bases(grid)) as tmp:
        save_file(bases, str(tmp))
    with atomic_path(run.paths.signatures(grid)) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, abstract=abstract, neural=neural, cost=cost, allowed=allowed,
                 variables=np.array(run.task.targets), sites=np.array([s.id for s in sites]))
    run.write_runtime(f"signatures_{grid}")


def _grid_section(run: Run, method: str) -> dict:
    """The spec section holding a handle method's solver and calibration grids."""
    return run.spec["refine"] if methods_mod.get(method).grid in REFINE_GRIDS else run.spec["plot"]


def _solver(run: Run, method: str) -> str:
    """The method's solver; "plot" and "refine" name the one set in that spec section."""
    solver = methods_mod.get(method).solver
    return _grid_section(run, method)["solver"] if solver in ("plot", "refine") else solver


def _solver_grid(run: Run, method: str) -> list[dict]:
    keys = SOLVER_PARAMS[_solver(run, method)]
    section = _grid_section(run, method)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(section[k] for k in keys))]


def stage_couple(run: Run, grid: str, methods: Iterable[str]) -> None:
    """Plans over each coupling method's solver grid, as a long table (method, params, variable, site,
    mass). Variables that share their allowed sites (Stage B: the same location) share one coupling."""
    from plotlib.signatures import cost_matrix
    from plotlib.transport import GEOMETRIC, couple, softmax_match  # POT: imported outside the timer

    sig = np.load(run.paths.signatures(grid))
    cost, allowed, variables, sites = sig["cost"], sig["allowed"], sig["variables"].tolist(), sig["sites"].tolist()
    metric = run.spec["signatures"]["cost"]
    groups: dict[bytes, list[int]] = {}
    for vi in range(len(variables)):
        groups.setdefault(allowed[vi].tobytes(), []).append(vi)
    geometry: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # GW's input, per group, computed once when first needed
    rows = []
    for method in methods:
        solver = _solver(run, method)
        with run.runtime.stage(method, "couple"):
            for params in _solver_grid(run, method):
                for key, rows_idx in groups.items():
                    cols = np.flatnonzero(allowed[rows_idx[0]])
                    sub = cost[np.ix_(rows_idx, cols)]
                    if solver in GEOMETRIC and key not in geometry:  # distances among the variables' and the sites' signatures
                        inner = sig["abstract"][rows_idx], sig["neural"][cols]
                        geometry[key] = tuple(cost_matrix(x, x, metric) for x in inner)
                    if solver == "softmax":
                        plan = softmax_match(sub, params["temperature"]) / len(rows_idx)
                    else:
                        plan = couple(sub, solver, **params, geometry=geometry.get(key) if solver in GEOMETRIC else None)
                    for i, vi in enumerate(rows_idx):
                        rows.extend({"method": method, "params": json.dumps(params, sort_keys=True), "variable": variables[vi],
                                     "site": sites[c], "mass": float(plan[i, j])} for j, c in enumerate(cols))
    frame = pd.DataFrame(rows)
    frame.insert(0, "seed", run.seed)
    frame.insert(0, "benchmark", run.benchmark)
    write_parquet(frame, run.paths.couplings(grid))
    run.write_runtime(f"couple_{grid}")


def _choose(scored: list[tuple[float, dict, object]]):
    """Highest calibration score; ties go to the earliest candidate in grid order (deterministic)."""
    best = max(range(len(scored)), key=lambda i: (scored[i][0], -i))
    return scored[best]


def load_bases(path: str) -> dict[str, torch.Tensor]:
    return load_file(path) if Path(path).exists() else {}


def stage_calibrate(run: Run, method: str) -> None:
    """Choose each variable's handle on the calibration bank only, then evaluate it once on test."""
    import plotlib.transport  # noqa: F401 - POT is imported here, outside the timer, for _coupling_rows

    spec = methods_mod.get(method)
    cal_rows, acc_rows, chosen = [], [], {}
    bases = load_bases(run.paths.bases(spec.grid)) if spec.grid != "coarse" else {}
    section = _grid_section(run, method)
    # brute-force is the localist baseline: one site, plain full interchange (k = 1, gain = 1)
    top_k, gains = ([1], [1.0]) if spec.solver == "onehot" else (section["top_k"], section["gain"])
    with run.runtime.stage(method, "calibrate"):
        cal = run.bank("calibration")
        for variable in run.task.targets:
            candidates = [({**params, **hp}, handle) for params, pi_row, sites, cost_row in _coupling_rows(run, method, variable)
                          for hp, handle in candidate_handles(pi_row, sites, top_k, gains, section.get("alternatives", 1), cost_row)]
            # solver settings often give the same handle: score each distinct one once, many per forward
            distinct: dict[tuple, Handle] = {}
            for _, h in candidates:
                distinct.setdefault(_handle_key(h), h)
            scores_of = dict(zip(distinct, evaluate_handles(run.backbone, cal, list(distinct.values()), variable, run.widths, bases)))
            scored = []
            for hp, handle in candidates:
                scores = scores_of[_handle_key(handle)]
                scored.append((selection_score(scores), hp, handle))
                cal_rows.append({"variable": variable, "hyperparameters": json.dumps(hp, sort_keys=True),
                                 "sites": handle.label, **{m: scores[m] for m in ("sensitive", "invariant", "combined")}})
            chosen[variable] = _choose(scored)
    with run.runtime.stage(method, "test"):
        test = run.bank("test")
        for variable, (score, hp, handle) in chosen.items():
            scores = evaluate_handle(run.backbone, test, handle, variable, run.widths, bases)
            acc_rows += run.accuracy_rows("handle", method, variable, "test", scores, handle.label, hp)
            acc_rows += run.localization_rows("handle", method, variable, handle_spans(handle, run.widths, bases), handle.label, hp)
    write_json({v: {"handle": h.to_json(), "hyperparameters": hp, "calibration_score": s} for v, (s, hp, h) in chosen.items()},
               run.paths.handles(method))
    write_parquet(pd.DataFrame(cal_rows), run.paths.calibration(method))
    write_parquet(pd.DataFrame(acc_rows, columns=ACCURACY_COLUMNS), run.paths.accuracy(method))
    run.write_runtime(f"calibrate_{method}")


def _handle_key(handle: Handle) -> tuple:
    return handle.label, tuple(round(w, 9) for w in handle.weights), handle.gain


def _coupling_rows(run: Run, method: str, variable: str):
    """(solver params, pi(S | variable), sites, the variable's cost to each site) for each solver setting;
    brute-force gets one-hot rows over the Stage A sites (and no cost)."""
    if methods_mod.get(method).solver == "onehot":
        sites = run.stage_a_sites
        for i in range(len(sites)):
            yield {"site": sites[i].id}, np.eye(len(sites))[i], sites, None
        return
    from plotlib.transport import conditional  # already imported by stage_calibrate, outside its timer

    grid = methods_mod.get(method).grid
    sig = np.load(run.paths.signatures(grid))
    column = {site: j for j, site in enumerate(sig["sites"].tolist())}
    cost = sig["cost"][sig["variables"].tolist().index(variable)]
    plans = pd.read_parquet(run.paths.couplings(grid))
    plans = plans[(plans.method == method) & (plans.variable == variable)]
    for params, group in plans.groupby("params", sort=False):
        pi = conditional(group.mass.to_numpy()[None, :])[0]
        yield json.loads(params), pi, [Site.parse(s) for s in group.site], cost[[column[s] for s in group.site]]


# --- DAS: one implementation for Full DAS and every guided variant -------------------------------

def _das_cells(run: Run, location: str, variable: str, within: torch.Tensor | None = None,
               dims: Iterable[int] | None = None, support: str = "location", mask: str | None = None) -> list[Cell]:
    """The (k, lr) grid of one variable at ``location`` (inside ``within``, named ``support``, if given).
    ``dims`` defaults to the spec's grid, capped at the room available; with a ``mask`` ("boundary":
    Boundless DAS, "units": DBM), one cell per lr instead, whose size is learned. Seeds depend on the cell,
    never on the method."""
    cfg = run.spec["das"]
    room = run.widths[location] if within is None else within.shape[1]
    if mask:
        return [Cell(variable, room, lr, derived_seed(run.seed, variable, location, mask, lr), within, support, mask)
                for lr in cfg["lrs"]]
    capped = sorted(k for k in (dims or cfg["dims"]) if k > room)
    if capped:
        log.info("das.dims %s capped at %d, the room at %s (%s)", capped, room, location, support)
    return [Cell(variable, k, lr, derived_seed(run.seed, variable, location, k, lr), within, support)
            for k in sorted({min(k, room) for k in (dims or cfg["dims"])}) for lr in cfg["lrs"]]


def _das_grid(run: Run, method: str, location: str, cells: list[Cell]) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Train every cell at ``location`` together, then score each on calibration."""
    cfg = run.spec["das"]
    width = run.widths[location]
    schedule = MaskSchedule(cfg["mask_penalty"], *cfg["mask_temperature"])
    subspaces = train_rotations(run.backbone, run.bank("das_train"), location, cells, cfg["epochs"], cfg["batch_size"],
                                run.spec["batching"]["das_rows"], schedule)
    scores = evaluate_rotations(run.backbone, run.bank("calibration"), location, [c.variable for c in cells], subspaces)
    rows, bases = [], {}
    for cell, q, score in zip(cells, subspaces, scores):
        k = q.shape[-1]  # a learned size where the cell has a mask
        key = f"{location}/{cell.variable}/{cell.support}/{cell.mask or f'k{k}'}/lr{cell.lr}"
        bases[key] = q
        rows.append({"location": location, "variable": cell.variable, "support": cell.support, "k": k, "lr": cell.lr,
                     "key": key, "room": cell.room(width), **{m: score[m] for m in ("sensitive", "invariant", "combined")}})
        log.info("%s %s %s (%s) k=%d/%d lr=%g calibration combined IIA %.4f", method, location, cell.variable, cell.support,
                 k, cell.room(width), cell.lr, score["combined"])
    return rows, bases


def _write_das(run: Run, method: str, tag: str, rows: list[dict], bases: dict[str, torch.Tensor]) -> None:
    with atomic_path(run.paths.das_bases(method, tag)) as tmp:
        save_file(bases, str(tmp))
    write_parquet(pd.DataFrame(rows), run.paths.das_scores(method, tag))


def stage_das_location(run: Run, method: str, location: str) -> None:
    """One Full DAS job: the whole (variable, k, lr) grid at one coarse location, trained together."""
    with run.runtime.stage(method, f"das_{location}"):
        mask = methods_mod.get(method).mask
        cells = [c for v in run.task.targets for c in _das_cells(run, location, v, mask=mask)]
        rows, bases = _das_grid(run, method, location, cells)
    _write_das(run, method, location, rows, bases)
    run.write_runtime(f"das_{method}", location)


def guided_location(run: Run, handle: Handle) -> str:
    """The location (id) holding most of a handle's mass (ties: network order)."""
    mass = handle.mass_by_location()
    order = [loc.id for loc in run.locations]
    return max(order, key=lambda location: (mass.get(location, 0.0), -order.index(location)))


def random_location(run: Run, variable: str) -> str:
    """A coarse location drawn uniformly for ``variable`` from the run's seed (the random-DAS control)."""
    order = [loc.id for loc in run.locations]
    return order[np.random.default_rng(derived_seed(run.seed, "random location", variable)).integers(len(order))]


def _guided_cells(run: Run, method: str) -> dict[str, list[Cell]]:
    """Each variable's DAS cells where the method looks, by location: where its guide's handle points
    (the Stage A location; or, for a Stage B guide, inside each support of ``das.supports`` there, with
    the dimension hint as the k grid when ``das.dimension_hint`` is set), or at a random coarse location."""
    spec = methods_mod.get(method)
    cells: dict[str, list[Cell]] = {}
    if spec.where == "random":
        for variable in run.task.targets:
            location = random_location(run, variable)
            cells.setdefault(location, []).extend(_das_cells(run, location, variable, mask=spec.mask))
        return cells
    grid = methods_mod.get(spec.parent).grid
    handles = read_json(run.paths.handles(spec.parent))
    guide_bases = load_bases(run.paths.bases(grid)) if grid in REFINE_GRIDS else {}
    for variable in run.task.targets:
        handle = Handle.from_json(handles[variable]["handle"])
        location = guided_location(run, handle)
        if grid not in REFINE_GRIDS:
            cells.setdefault(location, []).extend(_das_cells(run, location, variable, mask=spec.mask))
            continue
        for label, there in _das_supports(run, spec.parent, variable, handles[variable], location):
            within = None if there is None else support_basis(there, run.widths[location], guide_bases.get(location))
            dims = None
            if run.spec["das"]["dimension_hint"]:
                dims = dimension_hint(run.widths[location] if within is None else within.shape[1], run.spec["das"]["hint_factors"])
            cells.setdefault(location, []).extend(_das_cells(run, location, variable, within, dims, label, spec.mask))
    return cells


def _das_supports(run: Run, guide: str, variable: str, chosen: dict, location: str) -> list[tuple[str, list[Site] | None]]:
    """The supports a Stage-B-guided DAS trains in (``das.supports``), chosen among on DAS's own
    calibration: ``handle`` (the calibrated handle's sites), a fraction f (the fewest dimensions holding
    f of the coupling row's mass at the calibrated solver setting), ``location`` (the whole location,
    None). A support equal to an earlier one is dropped."""
    handle = Handle.from_json(chosen["handle"])
    width = run.widths[location]
    out, seen = [], set()
    for option in run.spec["das"]["supports"]:
        if option == "handle":
            label, there = "handle", [s for s in handle.sites if s.location.id == location]
        elif option == "location":
            label, there = "location", None
        else:
            params = solver_params(chosen["hyperparameters"])
            pi_row, sites, cost_row = next((pi, sites, c) for p, pi, sites, c in _coupling_rows(run, guide, variable) if p == params)
            label, there = f"mass{option:g}", [mass_support(pi_row, sites, option, width, cost_row)]
        dims = frozenset(range(width)) if there is None else frozenset(
            i for s in there for i in (range(width) if s.support.kind == "all" else s.support.indices))
        key = None if len(dims) == width else dims  # every full span is the whole space (a PCA basis is complete)
        if key not in seen:
            seen.add(key)
            out.append((label, there))
    return out


def stage_guided_das(run: Run, method: str) -> None:
    """DAS only where the method looks (PLOT-DAS, PLOT-native-DAS, PLOT-PCA-DAS, and the controls
    brute-force-DAS and random-DAS), every variable's cells at one location trained together."""
    rows, bases = [], {}
    with run.runtime.stage(method, "das"):
        for location, cells in _guided_cells(run, method).items():
            r, b = _das_grid(run, method, location, cells)
            rows += r
            bases.update(b)
    _write_das(run, method, "guided", rows, bases)
    run.write_runtime(f"das_{method}")
    stage_das_select(run, method, ["guided"])


def stage_das_select(run: Run, method: str, tags: list[str]) -> None:
    """Pick each variable's best (location, k, lr) by calibration score, then evaluate it once on test."""
    acc_rows = []
    with run.runtime.stage(method, "select_test"):
        scores = pd.concat([pd.read_parquet(run.paths.das_scores(method, t)).assign(tag=t) for t in tags], ignore_index=True)
        test = run.bank("test")
        for variable in run.task.targets:
            cand = scores[scores.variable == variable].reset_index(drop=True)
            best = cand.iloc[int(np.argmax(cand["combined"].to_numpy()))]  # first maximum: grid order breaks ties
            q = load_file(run.paths.das_bases(method, best.tag))[best.key]
            result = evaluate_rotation(run.backbone, test, best.location, variable, q)
            label = f"{best.location}/das[k={best.k}/{best.room}]"
            hp = {"location": best.location, "support": best.support, "k": int(best.k), "lr": float(best.lr), "room": int(best.room)}
            acc_rows += run.accuracy_rows("das", method, variable, "test", result, label, hp)
            acc_rows += run.localization_rows("das", method, variable, {best.location: q}, label, hp)
    write_parquet(pd.DataFrame(acc_rows, columns=ACCURACY_COLUMNS), run.paths.accuracy(method))
    run.write_runtime(f"select_{method}")
