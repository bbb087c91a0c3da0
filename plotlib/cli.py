"""Command line: ``python -m plotlib <stage> ...``, one subcommand per Snakemake rule."""
from __future__ import annotations

import argparse
import logging
import sys

import torch

from plotlib import pipeline
from plotlib.config import ConfigError, load_yaml, resolve_benchmark
from plotlib.io import write_json
from plotlib.methods import GRIDS
from plotlib.training import BelowAccuracyFloor


def _resolve(args: argparse.Namespace) -> None:
    spec = resolve_benchmark(args.benchmark_file, args.scale, load_yaml(args.schema), args.methods, args.imports)
    write_json({"name": args.name, "scale": args.scale, "spec": spec}, args.out)


def _report(args: argparse.Namespace) -> None:
    from plotlib.report import build_report  # matplotlib only where it is needed

    runs = [(r.rpartition(":")[0], int(r.rpartition(":")[2])) for r in args.runs]
    build_report(args.output_dir, runs)


def _show(args: argparse.Namespace) -> None:
    from plotlib.results import show
    print(show(args.output_dir, args.benchmarks or None))


def _plan(args: argparse.Namespace) -> None:
    from pathlib import Path

    from plotlib.plan import plan

    root = Path(__file__).resolve().parents[1]
    path = Path(args.spec) if args.spec.endswith((".yaml", ".yml")) else root / "benchmarks" / f"{args.spec}.yaml"
    spec = resolve_benchmark(path, args.scale, load_yaml(root / "workflow" / "schemas" / "benchmark.schema.yaml"))
    table = plan(spec, args.depths, args.widths, args.heads, args.measure_depth, args.rows,
                 log=lambda line: print(line, file=sys.stderr))
    shown = table.astype(object)
    for column in ("PLOT s", "Full DAS s", "PLOT-DAS s"):
        shown[column] = [f"{x:,.0f}" if x >= 10 else f"{x:.1f}" for x in table[column]]
    shown["cache GB"] = [f"{x:.2f}" for x in table["cache GB"]]
    shown["Full DAS / PLOT-DAS"] = [f"{x:.1f}x" for x in table["Full DAS / PLOT-DAS"]]
    print(shown.to_markdown(index=False, stralign="right", disable_numparse=True))


def _stage(fn, uses_backbone: bool):
    """A subcommand that runs one pipeline stage of one (benchmark, seed) run; the backbone is loaded
    and warmed up before any stage timer starts."""
    def call(args: argparse.Namespace) -> None:
        run = pipeline.Run(args.spec, args.seed, args.run_dir)
        if uses_backbone:
            run.backbone  # noqa: B018 - load and warm up outside the timers
        fn(run, args)

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plotlib", description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("resolve", help="validate a benchmark spec, merge its scale preset, write JSON")
    p.add_argument("--benchmark-file", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--scale", default="default")
    p.add_argument("--schema", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--methods", nargs="+", default=None, help="narrow the spec's methods to these")
    p.add_argument("--imports", nargs="*", default=[], help="modules to import first (the run config's imports, absolute paths)")
    p.set_defaults(func=_resolve)

    def stage(name: str, help: str, fn, uses_backbone: bool = True) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help)
        q.add_argument("--spec", required=True, help="resolved spec JSON (from 'resolve')")
        q.add_argument("--seed", type=int, required=True)
        q.add_argument("--run-dir", required=True)
        q.set_defaults(func=_stage(fn, uses_backbone))
        return q

    stage("train", "train the backbone or load the given checkpoint", lambda run, a: pipeline.stage_train(run), False)
    stage("banks", "sample and label the pair banks", lambda run, a: pipeline.stage_banks(run), False)
    stage("cache", "cache base/source activations of banks (each timed and written on its own)",
          lambda run, a: pipeline.stage_cache(run, a.splits)).add_argument("--splits", nargs="+", required=True)
    q = stage("signatures", "output-effect signatures and cost on the fit bank, on one site grid",
              lambda run, a: pipeline.stage_signatures(run, a.grid))
    q.add_argument("--grid", default="coarse", choices=GRIDS)
    q = stage("couple", "OT/UOT/softmax plans over the solver grids, on one site grid",
              lambda run, a: pipeline.stage_couple(run, a.grid, a.methods), False)
    q.add_argument("--grid", default="coarse", choices=GRIDS)
    q.add_argument("--methods", nargs="+", required=True)
    stage("calibrate", "choose handles on calibration, evaluate on test",
          lambda run, a: pipeline.stage_calibrate(run, a.method)).add_argument("--method", required=True)
    q = stage("das-location", "one Full DAS job: the whole grid at one coarse location",
              lambda run, a: pipeline.stage_das_location(run, a.method, a.location))
    q.add_argument("--method", default="Full DAS")
    q.add_argument("--location", required=True, help="a coarse location id, e.g. h1 or L2@last")
    q = stage("das-select", "choose DAS by calibration across locations, evaluate on test",
              lambda run, a: pipeline.stage_das_select(run, a.method, a.locations))
    q.add_argument("--method", default="Full DAS")
    q.add_argument("--locations", nargs="+", required=True)
    q = stage("guided-das", "DAS where each variable's guide points (location, or Stage B support), or at a random location",
              lambda run, a: pipeline.stage_guided_das(run, a.method))
    q.add_argument("--method", default="PLOT-DAS")

    p = sub.add_parser("report", help="summary tables, figures and report.md")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--runs", nargs="+", required=True, help="benchmark:seed pairs")
    p.set_defaults(func=_report)

    p = sub.add_parser("summary", aliases=["show"], help="print a finished run's method tables and where each variable was found")
    p.add_argument("output_dir", nargs="?", default="results", help="the run's output_dir (default: results)")
    p.add_argument("--benchmarks", nargs="+", default=[], help="only these benchmarks")
    p.set_defaults(func=_show)

    p = sub.add_parser("plan", help="estimate a transformer benchmark's cache size and the time of PLOT and Full DAS "
                                    "at other depths and widths, from per-layer costs measured here")
    p.add_argument("spec", help="a built-in benchmark name or a spec file")
    p.add_argument("--scale", default="default")
    p.add_argument("--depths", type=int, nargs="+", default=[4, 12, 26, 32], help="decoder layers")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 768, 2304, 4096], help="residual widths")
    p.add_argument("--heads", type=int, default=None, help="attention heads of the measured model (default: width / 64)")
    p.add_argument("--measure-depth", type=int, default=2, help="layers of the model the costs are measured on")
    p.add_argument("--rows", type=int, default=32, help="prompts per measured forward")
    p.set_defaults(func=_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, BelowAccuracyFloor) as err:
        print(f"plotlib {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
