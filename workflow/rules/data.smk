# Pair banks and the shared activation cache (one file per bank, every coarse location inside).

from plotlib.banks import SPLITS


rule make_banks:
    input:
        spec=SPEC,
    output:
        banks=[P.bank(s) for s in SPLITS],
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
        banks=[P.bank(s) for s in SPLITS],
    output:
        caches=[P.cache(s) for s in SPLITS],
        runtimes=[P.runtime(f"cache_{s}") for s in SPLITS],
    log:
        P.log("cache"),
    benchmark:
        P.benchmark("cache")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("cache_activations"),
    group:
        "prepare"
    shell:  # one job for the four banks: the model loads once, and three job start-ups are saved
        f"{PLOTLIB} cache {RUN_ARGS} --splits {' '.join(SPLITS)} 2> {{log}}"
