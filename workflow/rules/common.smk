# Config validation (before any job runs), paths and helpers shared by every rule.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from plotlib.config import ConfigError, load_run
from plotlib.layout import RunPaths, slug
from plotlib.methods import METHODS as METHOD_TABLE
from plotlib.methods import GRIDS, coupling_methods
from plotlib.pipeline import check_site_sizes, coarse_location_ids

BASE = Path(workflow.basedir)
SCHEMAS = BASE / "workflow" / "schemas"
try:
    RUN = load_run(config, SCHEMAS, BASE / "benchmarks")
    for _bench, _spec in RUN.benchmarks.items():
        check_site_sizes(_spec, RUN.spec_files[_bench].name)
except ConfigError as err:
    raise WorkflowError(str(err))
CFG = RUN.config
OUT = CFG["output_dir"]
# Each benchmark's methods (its spec's list, narrowed by config 'methods'), and every method by file slug.
METHODS_OF = {bench: spec["methods"] for bench, spec in RUN.benchmarks.items()}
METHOD_BY_SLUG = {slug(m): m for m in METHOD_TABLE}
PY = sys.executable
THREADS = CFG["threads"]
# The plotlib CLI, with this run's torch threads.
PLOTLIB = f"{PY} -m plotlib --threads {THREADS}"
TRAIN_THREADS = CFG["train_threads"]

# Wildcard path patterns of one (benchmark, seed) run.
P = RunPaths(f"{OUT}/{{benchmark}}/seed{{seed}}")
SPEC = f"{OUT}/{{benchmark}}/spec.json"
# Arguments every per-run CLI call takes (formatted by Snakemake in each rule).
RUN_ARGS = f"--spec {{input.spec}} --seed {{wildcards.seed}} --run-dir {OUT}/{{wildcards.benchmark}}/seed{{wildcards.seed}}"

wildcard_constraints:
    benchmark="[A-Za-z0-9_-]+",
    seed=r"\d+",
    split="fit|calibration|test|das_train",
    location="[A-Za-z0-9_.@-]+",
    grid="|".join(GRIDS),


_LOCATIONS = {}


def location_ids(benchmark, seed):
    """Coarse location ids of a benchmark's backbone, known from its spec before training (computed once)."""
    key = (benchmark, int(seed))
    if key not in _LOCATIONS:
        _LOCATIONS[key] = coarse_location_ids(RUN.benchmarks[benchmark], key[1])
    return _LOCATIONS[key]


def locations_of(wildcards):
    return location_ids(wildcards.benchmark, wildcards.seed)


def run_roots():
    return [(b, s) for b in RUN.benchmarks for s in CFG["seeds"]]


def sized(rule_name):
    """A rule's mem_mb, runtime (minutes) and GPUs, from its benchmark spec's ``resources`` (scale applied)."""

    def pick(key):
        def get(wildcards):
            sizes = RUN.benchmarks[wildcards.benchmark]["resources"]
            return sizes.get(rule_name, sizes["default"]).get(key, 0)

        return get

    return {"mem_mb": pick("mem_mb"), "runtime": pick("runtime"), "gpu": pick("gpu")}
