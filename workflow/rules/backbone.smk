# The benchmark spec, resolved once; the backbone, trained (or loaded from backbone.checkpoint).


rule resolve_spec:
    input:
        benchmark=lambda wc: str(RUN.spec_files[wc.benchmark]),
        schema=str(SCHEMAS / "benchmark.schema.yaml"),
    output:
        SPEC,
    params:
        py=PY,
        scale=CFG["scale"],
        methods=lambda wc: " ".join(f"'{m}'" for m in METHODS_OF[wc.benchmark]),
        imports=" ".join(f"'{i}'" for i in RUN.imports),
    log:
        f"{OUT}/logs/resolve_{{benchmark}}.log",
    localrule: True
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "{params.py} -m plotlib resolve --benchmark-file {input.benchmark} --name {wildcards.benchmark}"
        " --scale {params.scale} --schema {input.schema} --methods {params.methods} --imports {params.imports} --out {output}"
        " 2> {log}"


rule train_backbone:
    input:
        spec=SPEC,
    output:
        model=P.model,
        metrics=P.train_metrics,
        runtime=P.runtime("train"),
    log:
        P.log("train"),
    benchmark:
        P.benchmark("train")
    conda:
        "../../environment.yml"
    threads: TRAIN_THREADS
    resources:
        **sized("train_backbone"),
    group:
        "prepare"
    shell:
        f"{PY} -m plotlib --threads {TRAIN_THREADS} train {RUN_ARGS} 2> {{log}}"
