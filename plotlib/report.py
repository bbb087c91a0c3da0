"""Summary tables, runtime-versus-accuracy figures and coupling heatmaps from the runs' rows.

Runtime accounting (docs/method.md §8): a method's counted time is the sum of the CPU seconds of the runtime
rows of every piece of work it needs (:func:`plotlib.methods.charges`), so it does not depend on what
ran beside it; wall seconds are kept beside. Backbone training, banks and the calibration and test
caches are the ``shared`` rows, reported on their own and charged to no method; the fit bank's cache
goes to the methods that build signatures, the DAS training bank's cache to the DAS methods.
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

from plotlib.handles import solver_params  # noqa: E402
from plotlib.io import atomic_path, read_json, write_parquet, write_text  # noqa: E402
from plotlib.layout import RunPaths, slug  # noqa: E402
from plotlib.localization import DECOY_FREE_BELOW  # noqa: E402
from plotlib.methods import BASELINE, CACHE_CHARGED_TO, GRIDS, METHODS, SHARED, charges, coupling_methods  # noqa: E402
from plotlib.pipeline import coarse_location_ids  # noqa: E402
from plotlib.results import method_table, found_rows  # noqa: E402


def method_seconds(runtime: pd.DataFrame, methods: dict[str, list[str]]) -> pd.DataFrame:
    """Counted wall and CPU seconds per (benchmark, seed, method); ``methods`` per benchmark."""
    rows = []
    for (bench, seed), group in runtime.groupby(["benchmark", "seed"]):
        for method in methods[bench]:
            part = group[group.method.isin(charges(method))]
            rows.append({"benchmark": bench, "seed": seed, "method": method,
                         "seconds_wall": part.seconds_wall.sum(), "seconds_cpu": part.seconds_cpu.sum()})
    return pd.DataFrame(rows, columns=["benchmark", "seed", "method", "seconds_wall", "seconds_cpu"])


SUMMARY_COLUMNS = ["benchmark", "method", "n_seeds", "iia", "iia_std", "seconds", "seconds_std", "seconds_wall",
                   "speedup_vs_full_das", "delta_iia_vs_full_das", "speedup_vs_full_boundless_das"]
#: The exhaustive baseline that learns each subspace's size: the second speedup column is against it.
BOUNDLESS_BASELINE = "Full Boundless DAS"


def summarize(accuracy: pd.DataFrame, seconds: pd.DataFrame) -> pd.DataFrame:
    """One row per (benchmark, method) over its seeds: test combined IIA (per seed the mean over
    variables; then mean and standard deviation over seeds), counted CPU seconds (``seconds``, mean and
    standard deviation over seeds) with wall seconds beside, the speedup and IIA difference against
    Full DAS (from the means), and the speedup against Full Boundless DAS (NaN where a benchmark does not
    run it). A standard deviation needs two seeds (NaN with one)."""
    test = accuracy[(accuracy.split == "test") & (accuracy.metric == "combined")]
    per_seed = test.groupby(["benchmark", "method", "seed"], as_index=False)["value"].mean().rename(columns={"value": "iia"})
    per_seed = per_seed.merge(seconds, on=["benchmark", "method", "seed"], how="outer")
    out = per_seed.groupby(["benchmark", "method"], as_index=False).agg(
        n_seeds=("iia", "count"), iia=("iia", "mean"), iia_std=("iia", "std"), seconds=("seconds_cpu", "mean"),
        seconds_std=("seconds_cpu", "std"), seconds_wall=("seconds_wall", "mean"))
    base = out[out.method == BASELINE].set_index("benchmark")
    out["speedup_vs_full_das"] = out.benchmark.map(base.seconds) / out.seconds
    out["delta_iia_vs_full_das"] = out.iia - out.benchmark.map(base.iia)
    boundless = out[out.method == BOUNDLESS_BASELINE].set_index("benchmark")
    out["speedup_vs_full_boundless_das"] = out.benchmark.map(boundless.seconds) / out.seconds
    order = {m: i for i, m in enumerate(METHODS)}
    out = out.sort_values(["benchmark", "method"], key=lambda c: c.map(order) if c.name == "method" else c)
    return out[SUMMARY_COLUMNS].reset_index(drop=True)


#: Decimals kept in summary.csv per column (IIA to 1e-4, seconds to 0.1 ms, speedups to 0.01x).
SUMMARY_DIGITS = {"iia": 4, "iia_std": 4, "delta_iia_vs_full_das": 4, "seconds": 4, "seconds_std": 4, "seconds_wall": 4,
                  "speedup_vs_full_das": 2, "speedup_vs_full_boundless_das": 2}


#: The guided DAS whose claim the controls test, and the controls (docs/method.md §7).
GUIDED, CONTROLS = "PLOT-DAS", ("brute-force-DAS", "random-DAS")


def control_lines(summary: pd.DataFrame, benchmark: str) -> list[str]:
    """Whether PLOT-DAS beats each control on IIA at equal or lower counted time, in plain words."""
    part = summary[summary.benchmark == benchmark].set_index("method")
    if GUIDED not in part.index:
        return []
    guided, lines = part.loc[GUIDED], []
    for control in (c for c in CONTROLS if c in part.index):
        other = part.loc[control]
        higher, cheaper = guided.iia > other.iia, guided.seconds <= other.seconds
        verdict = "beats it" if higher and cheaper else "does not beat it"
        lines.append(f"- {GUIDED} versus {control}: IIA {guided.iia:.3f} vs {other.iia:.3f} ({guided.iia - other.iia:+.3f}), "
                     f"counted {guided.seconds:.2f} s vs {other.seconds:.2f} s CPU ({other.seconds / guided.seconds:.2f}x): "
                     f"{GUIDED} {verdict} (higher IIA: {'yes' if higher else 'no'}; equal or lower time: {'yes' if cheaper else 'no'})")
    return ["Controls (docs/method.md §7): does PLOT-DAS beat a cheap guess?", "", *lines, ""] if lines else []


def _savefig(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def runtime_vs_iia_figure(summary: pd.DataFrame, benchmark: str, path: str | os.PathLike) -> None:
    """Counted CPU time against test IIA per method, with error bars of one standard deviation over seeds."""
    part = summary[summary.benchmark == benchmark]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    markers = "osD^vP*Xhp<>"
    for i, (_, row) in enumerate(part.iterrows()):  # a legend, not annotations: methods often share a point
        ax.errorbar(row.seconds, row.iia, xerr=np.nan_to_num(row.seconds_std), yerr=np.nan_to_num(row.iia_std),
                    fmt=markers[i % len(markers)], ms=6, capsize=3, label=row.method, alpha=0.85)
    if len(part):
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xscale("log")
    ax.set_xlabel("counted CPU time per seed (s, log scale; all sweeps included)")
    ax.set_ylabel("test IIA (combined, mean over variables)")
    n = int(part.n_seeds.max()) if len(part) else 0
    ax.set_title(f"{benchmark}: runtime versus IIA (mean +- std over {n} seeds)")
    ax.grid(alpha=0.3)
    _savefig(fig, path)


def coupling_figure(couplings: pd.DataFrame, handles: dict, method: str, path: str | os.PathLike, where: str = "") -> None:
    """pi(S | V) of the solver setting the calibration chose for each variable, chosen sites marked;
    ``where`` (benchmark and seed) heads the title."""
    part = couplings[couplings.method == method]
    sites = list(dict.fromkeys(part.site))
    variables = list(handles)
    matrix = np.zeros((len(variables), len(sites)))
    for i, var in enumerate(variables):
        hp = handles[var]["hyperparameters"]
        params = json.dumps(solver_params(hp), sort_keys=True)
        row = part[(part.params == params) & (part.variable == var)].set_index("site").mass.reindex(sites).to_numpy()
        matrix[i] = row / np.nansum(row)  # NaN: a Stage B site outside this variable's location
    fig, ax = plt.subplots(figsize=(max(6, len(sites) * 0.18), 1.2 + 0.5 * len(variables)))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis")
    for i, var in enumerate(variables):
        for site in handles[var]["handle"]["sites"]:
            ax.scatter(sites.index(site), i, marker="o", facecolors="none", edgecolors="red", s=60)
    ax.set_yticks(range(len(variables)), variables)
    ax.set_xticks(range(len(sites)), [s.replace("/coords", "").replace("/all", "") for s in sites], rotation=90, fontsize=6)
    ax.set_xlabel("candidate site (location / support)")
    ax.set_ylabel("target variable")
    ax.set_title(f"{where + ': ' if where else ''}{method}, pi(site | variable) at the calibrated solver setting (red: handle sites)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.02).set_label("pi(site | variable)")
    _savefig(fig, path)


def layer_token_figure(run: RunPaths, locations: list[str], variables: list[str], path: str | os.PathLike, where: str = "") -> None:
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
        best = das[das.variable == var].groupby("location").combined.max()
        hp = handles[var]["hyperparameters"]
        params = json.dumps(solver_params(hp), sort_keys=True)
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
                        colors = {"c": color} if marker == "x" else {"facecolors": "none", "edgecolors": color}  # "x" has no face
                        ax.scatter(layers.index(layer), positions.index(pos), marker=marker, s=90, label=method, **colors)
            ax.set_xticks(range(len(layers)), layers)
            ax.set_yticks(range(len(positions)), positions)
            ax.set_xlabel("layer (emb: input embedding)")
            ax.set_ylabel("token position")
            ax.set_title(f"{var}: {title}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.03).set_label(title.split(": ")[-1], fontsize=8)
        legend = dict(zip(*reversed(axes[i, 0].get_legend_handles_labels())))  # one entry per method
        if legend:
            axes[i, 0].legend(legend.values(), legend.keys(), fontsize=7, loc="upper left")
    if where:
        fig.suptitle(f"{where}: where each variable was found", fontsize=10)
    _savefig(fig, path)


def scaling_series(specs: dict[str, dict]) -> dict[str, list[str]]:
    """Scaling series: per task, its benchmarks that compare Full DAS with PLOT-DAS, where a task has two
    or more (the scaling preset); empty if the run has none."""
    by_task: dict[str, list[str]] = {}
    for bench, spec in specs.items():
        if {BASELINE, "PLOT-DAS"} <= set(spec["methods"]):
            by_task.setdefault(spec["task"], []).append(bench)
    return {task: benches for task, benches in by_task.items() if len(benches) >= 2}


def scaling_figure_path(task: str) -> str:
    return f"figures/scaling_{slug(task)}_speedup_vs_sites.png"


def scaling_figure(summary: pd.DataFrame, n_sites: dict[str, int], path: str | os.PathLike, task: str) -> pd.DataFrame:
    """Speedup of PLOT-DAS over Full DAS against the number of coarse candidate sites, one labelled point
    per benchmark of ``task``'s series; returns the table it plots."""
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
    ax.set_title(f"{task}: PLOT-DAS speedup versus candidate sites", fontsize=9)
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


def found_lines(accuracy: pd.DataFrame, bench: str, locations: list[str]) -> list[str]:
    """Where each variable was found: the location of PLOT's and Full DAS's answers per seed with test IIA,
    saying plainly when it is the input embedding or the last layer's output (not inside the network)."""
    layers = list(dict.fromkeys(loc.split("@")[0] for loc in locations))
    edge = {layers[0]: "the input embedding", layers[-1]: "the last layer's output"} if len(layers) > 1 and "@" in locations[0] else {}
    lines = []
    for method, variable, answers in found_rows(accuracy, bench):
        found = []
        for seed, where, value in answers:
            note = sorted({edge[loc.split("@")[0]] for loc in where if loc.split("@")[0] in edge})
            found.append(f"{' + '.join(where)} (seed {seed}, IIA {value:.3f}{'; ' + ', '.join(note) if note else ''})")
        lines.append(f"- {method}, {variable}: " + "; ".join(found))
    return ["Where each variable was found (test IIA; a location at the input embedding or the last layer's output "
            "is not inside the network):", "", *lines, ""] if lines else []


def benchmark_tables(bench: str, methods: list[str], summary: pd.DataFrame, accuracy: pd.DataFrame, runtime: pd.DataFrame) -> list[str]:
    """The report's tables for one benchmark (from its kept seeds): methods with mean +- std, the control
    verdicts, variables, and the preparation rows."""
    part = summary[summary.benchmark == bench]
    if part.empty:
        return ["No seed of this benchmark is kept (every backbone is below the accuracy floor): no tables.", ""]
    lines: list[str] = []
    lines += ["Per method: combined test IIA (mean over variables, then mean +- std over seeds), counted seconds per seed:", "",
              _markdown(method_table(part)), ""]
    lines += control_lines(summary, bench)
    test = accuracy[(accuracy.benchmark == bench) & (accuracy.split == "test")]
    per_variable = test.pivot_table(index=["method", "variable"], columns="metric", values="value", aggfunc="mean").reset_index()
    spread = test[test.metric == "combined"].groupby(["method", "variable"]).value.std().rename("combined std").reset_index()
    per_variable = per_variable.merge(spread, on=["method", "variable"])
    per_variable["method"] = pd.Categorical(per_variable.method, [m for m in METHODS if m in methods])
    per_variable = per_variable.sort_values(["method", "variable"])[["method", "variable", "sensitive", "invariant", "combined", "combined std"]]
    lines += ["Per variable: test IIA (mean over seeds):", "", _markdown(per_variable), ""]
    prep = runtime[(runtime.benchmark == bench) & runtime.method.isin([SHARED, *CACHE_CHARGED_TO.values()])]
    prep = prep.groupby(["method", "stage"], as_index=False)[["seconds_cpu", "seconds_wall"]].mean().rename(columns={"method": "charged to"})
    lines += ["Preparation (mean seconds per seed): `shared` rows are charged to no method; `signatures` (the fit bank's cache) "
              "to the methods that couple on Stage A signatures, `das-training` (the DAS training bank's cache) to every DAS method:",
              "", _markdown(prep), ""]
    return lines


def summary_rst(summary: pd.DataFrame, seeds: list[int]) -> str:
    """The summary as reStructuredText tables, one per benchmark (:func:`method_table`), for the HTML
    report's first page (``workflow/report/workflow.rst`` includes it)."""
    parts = [f"Seeds {', '.join(map(str, seeds))}: mean +- std over them. Every table and figure is under Results.", ""]
    for bench, part in summary.groupby("benchmark", sort=True):
        table = method_table(part)
        rows = [list(table.columns), *table.astype(str).values.tolist()]
        parts += [f".. list-table:: {bench}", "   :header-rows: 1", ""]
        parts += ["   * - " + "\n     - ".join(row) for row in rows] + [""]
    return "\n".join(parts)


def localization_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, method), over its (seed, variable) cases on planted benchmarks: combined test IIA,
    precision and recall of the answer against the planted units, the share of decoy-free answers and
    the share at the planted location (means over cases)."""
    planted = accuracy[accuracy.split == "planted"]
    if planted.empty:
        return pd.DataFrame()
    keys = ["benchmark", "method", "seed", "variable"]
    cases = planted.pivot_table(index=keys, columns="metric", values="value").reset_index()
    combined = accuracy[(accuracy.split == "test") & (accuracy.metric == "combined")][[*keys, "value"]].rename(columns={"value": "test IIA"})
    cases = cases.merge(combined, on=keys)
    cases["decoy-free"] = (cases.decoy_dims < DECOY_FREE_BELOW).astype(float)
    table = cases.groupby(["benchmark", "method"], sort=False).agg(
        cases=("variable", "size"), **{"test IIA": ("test IIA", "mean"), "precision": ("precision", "mean"),
                                       "recall": ("recall", "mean"), "decoy-free": ("decoy-free", "mean"),
                                       "location hits": ("location_hit", "mean")}).reset_index()
    table["method"] = pd.Categorical(table.method, list(METHODS))
    return table.sort_values(["benchmark", "method"]).reset_index(drop=True)


def localization_lines(table: pd.DataFrame, bench: str) -> list[str]:
    """The report's ground-truth table for a planted benchmark (none for others)."""
    part = table[table.benchmark == bench].drop(columns="benchmark") if not table.empty else table
    if part.empty:
        return []
    return ["Against the planted ground truth, per method over its (seed, variable) cases: precision and recall of the",
            "handle's span (or the DAS subspace) against the planted units, the share of decoy-free answers (under half a",
            "decoy direction) and the share at the planted layer:", "", _markdown(part.round(3)), ""]


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
    write_parquet(accuracy, out / "accuracy.parquet")  # every run's rows, excluded seeds too
    write_parquet(runtime, out / "runtime.parquet")
    # a seed whose backbone is below the accuracy floor is left out of every table and named with its reason
    excluded = {(t["benchmark"], t["seed"]): t["excluded"] for t in train if t.get("excluded")}
    accuracy, runtime = (frame[[(b, s) not in excluded for b, s in zip(frame.benchmark, frame.seed)]] for frame in (accuracy, runtime))
    summary = summarize(accuracy, method_seconds(runtime, bench_methods))
    with atomic_path(out / "summary.csv") as tmp:  # rounded for reading; the report computes from the full values
        summary.round(SUMMARY_DIGITS).to_csv(tmp, index=False)
    seeds = sorted({seed for _, seed in runs})
    write_text(summary_rst(summary, seeds), out / "summary.rst")
    located = localization_table(accuracy)
    if not located.empty:
        with atomic_path(out / "localization.csv") as tmp:
            located.to_csv(tmp, index=False)

    lines = ["# plotlib report", "",
             f"Seeds: {', '.join(map(str, seeds))}. Every figure is a mean over seeds, with its standard deviation (std) beside it.",
             "Counted time (docs/method.md §8) is the CPU seconds of the timed sections of everything a method needs, every",
             "sweep included: torch runs each job's timed sections on the config's `threads` (1 by default), so",
             "the count does not depend on which jobs ran beside it; wall seconds are kept beside it. Backbone training,",
             "banks and the calibration and test caches are shared rows charged to no method; the fit bank's cache is",
             "charged with the signatures to every method that couples on them, the DAS training bank's cache to every DAS method.", ""]
    for bench in sorted(specs):
        methods = bench_methods[bench]
        lines += [f"## {bench}", ""]
        tr = pd.DataFrame([t for t in train if t["benchmark"] == bench])
        lines += ["Backbone factual accuracy per seed: " + ", ".join(f"{a:.4f} (seed {s})" for a, s in zip(tr.factual_accuracy, tr.seed)), ""]
        lines += [f"**Seed {s} is excluded**: {reason}." for (b, s), reason in sorted(excluded.items()) if b == bench]
        lines += [""] if any(b == bench for b, _ in excluded) else []
        lines += benchmark_tables(bench, methods, summary, accuracy, runtime)
        lines += localization_lines(located, bench)
        first_seed, locations = first_seeds[bench], locations_of[bench]
        lines += found_lines(accuracy, bench, locations)
        figs = figure_paths(bench, first_seed, methods, any("@" in loc for loc in locations))
        runtime_vs_iia_figure(summary, bench, out / figs["runtime_vs_iia"])
        lines += [f"![runtime versus IIA]({figs['runtime_vs_iia']})", ""]
        first = RunPaths(str(out / bench / f"seed{first_seed}"))
        for method in methods:
            fig = figs.get(f"coupling_{slug(method)}")
            if fig:  # the methods figure_paths gives a coupling figure
                grid = METHODS[method].grid
                coupling_figure(pd.read_parquet(first.couplings(grid)), read_json(first.handles(method)), method, out / fig,
                                f"{bench}, seed {first_seed}")
                lines += [f"![{method} coupling]({fig})", ""]
        if "layer_token" in figs:
            variables = list(read_json(first.handles("PLOT")))
            layer_token_figure(first, locations, variables, out / figs["layer_token"], f"{bench}, seed {first_seed}")
            lines += [f"![Full DAS versus PLOT over layer x token sites]({figs['layer_token']})", ""]
    for task, series in scaling_series(specs).items():
        path = scaling_figure_path(task)
        table = scaling_figure(summary, {b: len(locations_of[b]) for b in series}, out / path, task)
        lines += [f"## Scaling: {task}", "", "Full DAS and PLOT-DAS per benchmark of the series (counted seconds and test IIA, mean over seeds):", "",
                  _markdown(table), "", f"![speedup versus candidate sites]({path})", ""]
    write_text("\n".join(lines), out / "report.md")
