"""Command line: ``python -m plotlib <stage> ...``, one subcommand per Snakemake rule."""
from __future__ import annotations

import argparse
import logging
import sys

import torch

from plotlib import pipeline
from plotlib.config import ConfigError, load_yaml, resolve_benchmark
from plotlib.io import write_json


def _run(args: argparse.Namespace) -> pipeline.Run:
    return pipeline.Run(args.spec, args.seed, args.run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plotlib", description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("resolve", help="validate a benchmark spec, merge its scale preset, write JSON")
    p.add_argument("--benchmark-file", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--scale", default="default")
    p.add_argument("--schema", required=True)
    p.add_argument("--out", required=True)

    def run_parser(name: str, help: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help)
        q.add_argument("--spec", required=True, help="resolved spec JSON (from 'resolve')")
        q.add_argument("--seed", type=int, required=True)
        q.add_argument("--run-dir", required=True)
        return q

    run_parser("train", "train the backbone or load the given checkpoint")
    run_parser("banks", "sample and label the pair banks")
    run_parser("cache", "cache base/source activations of one bank").add_argument("--split", required=True)
    run_parser("signatures", "output-effect signatures and cost on the fit bank")
    run_parser("couple", "OT/UOT/softmax plans over the solver grids").add_argument("--methods", nargs="+", required=True)
    run_parser("calibrate", "choose handles on calibration, evaluate on test").add_argument("--method", required=True)
    q = run_parser("das-layer", "one Full DAS job: the whole grid at one layer")
    q.add_argument("--method", default="Full DAS")
    q.add_argument("--layer", required=True)
    q = run_parser("das-select", "choose DAS by calibration across layers, evaluate on test")
    q.add_argument("--method", default="Full DAS")
    q.add_argument("--layers", nargs="+", required=True)
    q = run_parser("guided-das", "DAS at the layer of each variable's PLOT handle")
    q.add_argument("--method", default="PLOT-DAS")
    q.add_argument("--guide", default="PLOT")
    p = sub.add_parser("report", help="summary tables, figures and report.md")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--runs", nargs="+", required=True, help="benchmark:seed pairs")
    p.add_argument("--methods", nargs="+", required=True)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    try:
        if args.command == "resolve":
            spec = resolve_benchmark(args.benchmark_file, args.scale, load_yaml(args.schema))
            write_json({"name": args.name, "scale": args.scale, "spec": spec}, args.out)
        elif args.command == "report":
            from plotlib.report import build_report

            runs = [(r.rpartition(":")[0], int(r.rpartition(":")[2])) for r in args.runs]
            build_report(args.output_dir, runs, args.methods)
        else:
            run = _run(args)
            {
                "train": lambda: pipeline.stage_train(run),
                "banks": lambda: pipeline.stage_banks(run),
                "cache": lambda: pipeline.stage_cache(run, getattr(args, "split", "")),
                "signatures": lambda: pipeline.stage_signatures(run),
                "couple": lambda: pipeline.stage_couple(run, getattr(args, "methods", [])),
                "calibrate": lambda: pipeline.stage_calibrate(run, getattr(args, "method", "")),
                "das-layer": lambda: pipeline.stage_das_layer(run, args.method, getattr(args, "layer", "")),
                "das-select": lambda: pipeline.stage_das_select(run, args.method, getattr(args, "layers", [])),
                "guided-das": lambda: pipeline.stage_guided_das(run, args.method, getattr(args, "guide", "PLOT")),
            }[args.command]()
    except (ConfigError, FileNotFoundError) as err:
        print(f"plotlib {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
