# The report: long tables, summary.csv, report.md and figures, from every (benchmark, seed) run.

from plotlib.report import figure_paths, scaling_figure_path, scaling_series

report: "../report/workflow.rst"

REPORT_TABLES = [f"{OUT}/{name}" for name in ("accuracy.parquet", "runtime.parquet", "report.md", "summary.rst")]
FIGURES = {
    (bench, kind): f"{OUT}/{path}"
    for bench in RUN.benchmarks
    for kind, path in figure_paths(bench, CFG["seeds"][0], METHODS_OF[bench],
                                   any("@" in loc for loc in location_ids(bench, CFG["seeds"][0]))).items()
}
SCALING = [f"{OUT}/{scaling_figure_path(task)}" for task in scaling_series(RUN.benchmarks)]
REPORT_OUTPUTS = [*REPORT_TABLES, f"{OUT}/summary.csv", *FIGURES.values(), *SCALING]


rule report:
    input:
        specs=[SPEC.format(benchmark=b) for b in RUN.benchmarks],
        accuracy=[P.accuracy(m).format(benchmark=b, seed=s) for b, s in run_roots() for m in METHODS_OF[b]],
        metrics=[P.train_metrics.format(benchmark=b, seed=s) for b, s in run_roots()],
    output:
        *REPORT_TABLES,
        report(f"{OUT}/summary.csv", caption="../report/summary.rst", category="summary",
               labels={"table": "summary per benchmark and method"}),
        *[_figure_report(bench, kind) for bench, kind in FIGURES],
        *[report(path, caption="../report/scaling.rst", category="scaling", labels={"figure": "speedup versus sites"}) for path in SCALING],
    params:
        runs=" ".join(f"{b}:{s}" for b, s in run_roots()),
    log:
        f"{OUT}/logs/report.log",
    localrule: True
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        f"{PY} -m plotlib report --output-dir {OUT} --runs {{params.runs}} 2> {{log}}"
