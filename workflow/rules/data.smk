# Pair banks and the shared activation cache (one file per bank, every coarse location inside).


rule make_banks:
    input:
        spec=SPEC,
    output:
        banks=[P.bank(s) for s in ("fit", "calibration", "test", "das_train")],
        runtime=P.runtime("banks"),
    log:
        P.log("banks"),
    benchmark:
        P.benchmark("banks")
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        **sized("make_banks"),
    group:
        "prepare"
    shell:
        f"{PLOTLIB} banks {RUN_ARGS} 2> {{log}}"


rule cache_activations:
    input:
        spec=SPEC,
        model=P.model,
        bank=P.bank("{split}"),
    output:
        cache=P.cache("{split}"),
        runtime=P.runtime("cache_{split}"),
    log:
        P.log("cache_{split}"),
    benchmark:
        P.benchmark("cache_{split}")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("cache_activations"),
    group:
        "prepare"
    shell:
        f"{PLOTLIB} cache {RUN_ARGS} --split {{wildcards.split}} 2> {{log}}"
