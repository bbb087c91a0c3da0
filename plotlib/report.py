"""Summary tables, runtime-versus-accuracy figures and coupling heatmaps from the runs' rows.

Runtime accounting (METHOD.md 8): a method's counted time is the sum of the runtime rows of every
piece of work it needs (:func:`plotlib.methods.charges`); backbone training, banks and the activation cache are the
``shared`` rows, reported on their own and charged to no method.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from plotlib.io import atomic_path, read_json, write_parquet, write_text  # noqa: E402
from plotlib.layout import RunPaths, slug  # noqa: E402
from plotlib.methods import BASELINE, GRIDS, METHODS, charges, coupling_methods  # noqa: E402
from plotlib.pipeline import coarse_location_ids  # noqa: E402


def method_seconds(runtime: pd.DataFrame, methods: dict[str, list[str]]) -> pd.DataFrame:
    """Counted wall and CPU seconds per (benchmark, seed, method); ``methods`` per benchmark."""
    rows = []
    for (bench, seed), group in runtime.groupby(["benchmark", "seed"]):
        for method in methods[bench]:
            part = group[group.method.isin(charges(method))]
            rows.append({"benchmark": bench, "seed": seed, "method": method,
                         "seconds_wall": part.seconds_wall.sum(), "seconds_cpu": part.seconds_cpu.sum()})
    return pd.DataFrame(rows)


def summarize(accuracy: pd.DataFrame, seconds: pd.DataFrame) -> pd.DataFrame:
    """One row per (benchmark, method): test combined IIA (mean over variables, then seeds), counted
    seconds (mean over seeds), speedup and IIA difference against Full DAS."""
    test = accuracy[(accuracy.split == "test") & (accuracy.metric == "combined")]
    per_seed = test.groupby(["benchmark", "method", "seed"], as_index=False)["value"].mean()
    iia = per_seed.groupby(["benchmark", "method"], as_index=False)["value"].mean().rename(columns={"value": "iia"})
    secs = seconds.groupby(["benchmark", "method"], as_index=False)[["seconds_wall", "seconds_cpu"]].mean()
    out = iia.merge(secs, on=["benchmark", "method"], how="outer").rename(columns={"seconds_wall": "seconds"})
    n_seeds = per_seed.groupby(["benchmark", "method"], as_index=False)["seed"].nunique().rename(columns={"seed": "n_seeds"})
    out = out.merge(n_seeds, on=["benchmark", "method"], how="left")
    base = out[out.method == BASELINE].set_index("benchmark")
    out["speedup_vs_full_das"] = out.apply(lambda r: base.seconds.get(r.benchmark, np.nan) / r.seconds, axis=1)
    out["delta_iia_vs_full_das"] = out.apply(lambda r: r.iia - base.iia.get(r.benchmark, np.nan), axis=1)
    order = {m: i for i, m in enumerate(METHODS)}
    return out.sort_values(["benchmark", "method"], key=lambda c: c.map(order) if c.name == "method" else c).reset_index(drop=True)


def _savefig(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def runtime_vs_iia_figure(summary: pd.DataFrame, benchmark: str, path: str | os.PathLike) -> None:
    part = summary[summary.benchmark == benchmark]
    fig, ax = plt.subplots(figsize=(6, 4))
    for _, row in part.iterrows():
        ax.scatter(row.seconds, row.iia, s=60)
        ax.annotate(row.method, (row.seconds, row.iia), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("counted time per seed (s, log scale; all sweeps included)")
    ax.set_ylabel("test IIA (combined, mean over variables)")
    ax.set_title(f"{benchmark}: runtime versus IIA")
    ax.grid(alpha=0.3)
    _savefig(fig, path)


def coupling_figure(couplings: pd.DataFrame, handles: dict, method: str, path: str | os.PathLike) -> None:
    """pi(S | V) of the solver setting the calibration chose for each variable, chosen sites marked."""
    part = couplings[couplings.method == method]
    sites = list(dict.fromkeys(part.site))
    variables = list(handles)
    matrix = np.zeros((len(variables), len(sites)))
    for i, var in enumerate(variables):
        hp = handles[var]["hyperparameters"]
        params = json.dumps({k: v for k, v in hp.items() if k not in ("k", "gain", "rank")}, sort_keys=True)
        row = part[(part.params == params) & (part.variable == var)].set_index("site").mass.reindex(sites).to_numpy()
        matrix[i] = row / np.nansum(row)  # NaN: a Stage B site outside this variable's location
    fig, ax = plt.subplots(figsize=(max(6, len(sites) * 0.18), 1.2 + 0.5 * len(variables)))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis")
    for i, var in enumerate(variables):
        for site in handles[var]["handle"]["sites"]:
            ax.scatter(sites.index(site), i, marker="o", facecolors="none", edgecolors="red", s=60)
    ax.set_yticks(range(len(variables)), variables)
    ax.set_xticks(range(len(sites)), [s.replace("/coords", "").replace("/all", "") for s in sites], rotation=90, fontsize=6)
    ax.set_title(f"{method}: pi(site | variable) at the calibrated solver setting (red: handle sites)")
    fig.colorbar(im, ax=ax, fraction=0.02)
    _savefig(fig, path)


def layer_token_figure(run: RunPaths, locations: list[str], variables: list[str], path: str | os.PathLike) -> None:
    """For a layer x token site grid: each variable's best Full DAS calibration IIA per coarse site beside
    PLOT's Stage A coupling mass there (at the calibrated solver setting); the sites that Full DAS,
    PLOT and PLOT-DAS chose are marked."""
    layers = list(dict.fromkeys(loc.split("@")[0] for loc in locations))
    positions = list(dict.fromkeys(loc.split("@")[1] for loc in locations))
    das = pd.concat([pd.read_parquet(run.das_scores("Full DAS", loc)) for loc in locations], ignore_index=True)
    plans, handles = pd.read_parquet(run.couplings("coarse")), read_json(run.handles("PLOT"))
    chosen = {m: pd.read_parquet(run.accuracy(m)) for m in ("Full DAS", "PLOT-DAS") if Path(run.accuracy(m)).exists()}
    fig, axes = plt.subplots(len(variables), 2, figsize=(1.1 * len(layers) * 2 + 3, (0.5 * len(positions) + 1.2) * len(variables)),
                             squeeze=False, layout="constrained")
    for i, var in enumerate(variables):
        best = das[das.variable == var].groupby("layer").combined.max()
        hp = handles[var]["hyperparameters"]
        params = json.dumps({k: v for k, v in hp.items() if k not in ("k", "gain", "rank")}, sort_keys=True)
        mass = plans[(plans.method == "PLOT") & (plans.variable == var) & (plans.params == params)]
        mass = mass.assign(location=mass.site.str.split("/").str[0]).groupby("location").mass.sum()
        marks = {"PLOT": {s.split("/")[0] for s in handles[var]["handle"]["sites"]}}
        for method, acc in chosen.items():
            marks[method] = set(acc[acc.variable == var].sites.str.split("/").str[0])
        for ax, values, title in ((axes[i, 0], best, "Full DAS calibration IIA"), (axes[i, 1], mass / mass.sum(), "PLOT pi(site | variable)")):
            grid = np.array([[values.get(f"{layer}@{pos}", np.nan) for layer in layers] for pos in positions])
            im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1 if "IIA" in title else None)
            for (method, sites), (marker, color) in zip(marks.items(), (("o", "red"), ("s", "white"), ("x", "orange"))):
                for site in sites:
                    layer, _, pos = site.partition("@")
                    if layer in layers and pos in positions:
                        ax.scatter(layers.index(layer), positions.index(pos), marker=marker, s=90,
                                   facecolors="none" if marker != "x" else color, edgecolors=color, label=method)
            ax.set_xticks(range(len(layers)), layers)
            ax.set_yticks(range(len(positions)), positions)
            ax.set_title(f"{var}: {title}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.03)
        legend = dict(zip(*reversed(axes[i, 0].get_legend_handles_labels())))  # one entry per method
        if legend:
            axes[i, 0].legend(legend.values(), legend.keys(), fontsize=7, loc="upper left")
    _savefig(fig, path)


SCALING_FIGURE = "figures/scaling_speedup_vs_sites.png"


def scaling_benchmarks(specs: dict[str, dict]) -> list[str]:
    """Benchmarks forming a scaling series: two or more specs of one task, each comparing Full DAS with
    PLOT-DAS (the scaling preset); empty if the run has no such series."""
    series = [b for b, spec in specs.items() if {BASELINE, "PLOT-DAS"} <= set(spec["methods"])]
    tasks = {specs[b]["task"] for b in series}
    return series if len(series) >= 2 and len(tasks) == 1 else []


def scaling_figure(summary: pd.DataFrame, n_sites: dict[str, int], path: str | os.PathLike) -> pd.DataFrame:
    """Speedup of PLOT-DAS over Full DAS against the number of coarse candidate sites, one point per
    benchmark of the series; returns the table it plots."""
    rows = []
    for bench, sites in sorted(n_sites.items(), key=lambda kv: kv[1]):
        part = summary[summary.benchmark == bench].set_index("method")
        rows.append({"benchmark": bench, "coarse_sites": sites, "full_das_seconds": part.seconds[BASELINE],
                     "plot_das_seconds": part.seconds["PLOT-DAS"], "speedup": part.seconds[BASELINE] / part.seconds["PLOT-DAS"],
                     "full_das_iia": part.iia[BASELINE], "plot_das_iia": part.iia["PLOT-DAS"]})
    table = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(table.coarse_sites, table.speedup, marker="o")
    for _, r in table.iterrows():
        ax.annotate(r.benchmark, (r.coarse_sites, r.speedup), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("coarse candidate sites")
    ax.set_ylabel("speedup: Full DAS time / PLOT-DAS time")
    ax.set_title("PLOT-DAS speedup versus number of candidate sites")
    ax.grid(alpha=0.3)
    _savefig(fig, path)
    return table


def figure_methods(methods: list[str]) -> list[str]:
    """The methods that get a coupling heatmap: the transport couplings of every stage."""
    return [m for grid in GRIDS for m in coupling_methods(methods, grid) if m != "cosine"]


def figure_paths(benchmark: str, first_seed: int, methods: list[str], positioned: bool = False) -> dict[str, str]:
    """Figure files of one benchmark, relative to the output dir: the runtime-versus-IIA plot, the
    coupling heatmap of each OT method on the first seed and, for layer x token site grids (``positioned``),
    the Full DAS versus PLOT heatmap (the Snakefile declares the same names)."""
    paths = {"runtime_vs_iia": f"figures/{benchmark}_runtime_vs_iia.png"}
    if positioned and {"PLOT", BASELINE} <= set(methods):
        paths["layer_token"] = f"figures/{benchmark}_layer_token_seed{first_seed}.png"
    for method in figure_methods(methods):
        paths[f"coupling_{slug(method)}"] = f"figures/{benchmark}_coupling_{slug(method)}_seed{first_seed}.png"
    return paths


def _markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def stage_a_lines(out: Path, runs: list[tuple[str, int]], bench: str) -> list[str]:
    """Where PLOT's Stage A put each variable, per seed (a plain statement for the report)."""
    lines = []
    for b, seed in runs:
        handles = RunPaths(str(out / b / f"seed{seed}")).handles("PLOT")
        if b == bench and Path(handles).exists():
            chosen = read_json(handles)
            lines.append(f"- seed {seed}: " + ", ".join(f"{v} -> {' + '.join(h['handle']['sites'])}" for v, h in chosen.items()))
    return ["PLOT handle sites per variable (Stage A where the benchmark has stages):", "", *lines, ""] if lines else []


def build_report(output_dir: str, runs: list[tuple[str, int]]) -> None:
    """Gather every run's rows into the top-level tables, figures and ``report.md``; each benchmark's
    methods come from its resolved spec."""
    out = Path(output_dir)
    specs = {b: read_json(out / b / "spec.json")["spec"] for b, _ in runs}
    bench_methods = {b: spec["methods"] for b, spec in specs.items()}
    first_seeds = {b: seed for b, seed in reversed(runs)}
    locations_of = {b: coarse_location_ids(specs[b], first_seeds[b]) for b in specs}
    acc, rt, train = [], [], []
    for bench, seed in runs:
        paths = RunPaths(str(out / bench / f"seed{seed}"))
        acc += [pd.read_parquet(paths.accuracy(m)) for m in bench_methods[bench]]
        rt += [pd.read_parquet(p) for p in sorted(Path(paths.root, "runtime").glob("*.parquet"))]
        train.append({"benchmark": bench, "seed": seed, **read_json(paths.train_metrics)})
    accuracy, runtime = pd.concat(acc, ignore_index=True), pd.concat(rt, ignore_index=True)
    write_parquet(accuracy, out / "accuracy.parquet")
    write_parquet(runtime, out / "runtime.parquet")
    summary = summarize(accuracy, method_seconds(runtime, bench_methods))
    with atomic_path(out / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)

    lines = ["# plotlib report", "", "Counted time follows METHOD.md section 8: every sweep a method needs is included;",
             "backbone training, banks and the activation cache are shared rows charged to no method.", ""]
    for bench in sorted(summary.benchmark.unique()):
        methods = bench_methods[bench]
        lines += [f"## {bench}", ""]
        tr = pd.DataFrame([t for t in train if t["benchmark"] == bench])
        lines += [f"Backbone factual accuracy per seed: {', '.join(f'{a:.4f}' for a in tr.factual_accuracy)}", ""]
        test = accuracy[(accuracy.benchmark == bench) & (accuracy.split == "test")]
        table = test.pivot_table(index=["method", "variable"], columns="metric", values="value", aggfunc="mean").reset_index()
        table = table.merge(summary[summary.benchmark == bench][["method", "seconds", "speedup_vs_full_das", "delta_iia_vs_full_das"]], on="method")
        table["method"] = pd.Categorical(table.method, [m for m in METHODS if m in methods])
        table = table.sort_values(["method", "variable"])[["method", "variable", "sensitive", "invariant", "combined", "seconds",
                                                           "speedup_vs_full_das", "delta_iia_vs_full_das"]]
        lines += ["Test IIA per variable (mean over seeds), counted seconds per seed, speedup and IIA difference versus Full DAS:", "",
                  _markdown(table), ""]
        shared = runtime[(runtime.benchmark == bench) & (runtime.method == "shared")].groupby("stage")[["seconds_wall", "seconds_cpu"]].mean()
        lines += ["Shared stages (mean seconds per seed, charged to no method):", "", _markdown(shared.reset_index()), ""]
        lines += stage_a_lines(out, runs, bench)
        first_seed, locations = first_seeds[bench], locations_of[bench]
        figs = figure_paths(bench, first_seed, methods, any("@" in loc for loc in locations))
        runtime_vs_iia_figure(summary, bench, out / figs["runtime_vs_iia"])
        lines += [f"![runtime versus IIA]({figs['runtime_vs_iia']})", ""]
        first = RunPaths(str(out / bench / f"seed{first_seed}"))
        for method in methods:
            fig = figs.get(f"coupling_{slug(method)}")
            if fig:  # the methods figure_paths gives a coupling figure
                grid = METHODS[method].grid
                coupling_figure(pd.read_parquet(first.couplings(grid)), read_json(first.handles(method)), method, out / fig)
                lines += [f"![{method} coupling]({fig})", ""]
        if "layer_token" in figs:
            variables = list(read_json(first.handles("PLOT")))
            layer_token_figure(first, locations, variables, out / figs["layer_token"])
            lines += [f"![Full DAS versus PLOT over layer x token sites]({figs['layer_token']})", ""]
    series = scaling_benchmarks(specs)
    if series:
        table = scaling_figure(summary, {b: len(locations_of[b]) for b in series}, out / SCALING_FIGURE)
        lines += ["## Scaling", "", "Full DAS and PLOT-DAS per benchmark of the series (counted seconds and test IIA, mean over seeds):", "",
                  _markdown(table), "", f"![speedup versus candidate sites]({SCALING_FIGURE})", ""]
    write_text("\n".join(lines), out / "report.md")
