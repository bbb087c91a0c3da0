# The report: long tables, summary.csv, report.md and figures, from every (benchmark, seed) run.

REPORT_OUTPUTS = [f"{OUT}/{name}" for name in ("accuracy.parquet", "runtime.parquet", "summary.csv", "report.md")]


rule report:
    input:
        accuracy=[P.accuracy(m).format(benchmark=b, seed=s) for b, s in run_roots() for m in METHODS],
        metrics=[P.train_metrics.format(benchmark=b, seed=s) for b, s in run_roots()],
    output:
        REPORT_OUTPUTS,
    params:
        runs=" ".join(f"{b}:{s}" for b, s in run_roots()),
        methods=" ".join(f"'{m}'" for m in METHODS),
    log:
        f"{OUT}/logs/report.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        f"{PY} -m plotlib report --output-dir {OUT} --runs {{params.runs}} --methods {{params.methods}} 2> {{log}}"
