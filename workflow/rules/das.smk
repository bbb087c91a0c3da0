# DAS: Full DAS fans out one job per coarse layer (a cluster runs them in parallel), then selects on
# calibration and tests once; PLOT-DAS trains only at the layer of each variable's PLOT handle.

DAS_BANKS = {f"{kind}_{s}": getattr(P, kind)(s) for kind in ("bank", "cache") for s in ("das_train", "calibration", "test")}


rule full_das_layer:
    input:
        spec=SPEC,
        model=P.model,
        **DAS_BANKS,
    output:
        scores=P.das_scores("Full DAS", "{layer}"),
        bases=P.das_bases("Full DAS", "{layer}"),
        runtime=P.runtime("das_Full DAS_{layer}"),
    log:
        P.log("full_das_{layer}"),
    benchmark:
        P.benchmark("full_das_{layer}")
    threads: THREADS
    resources:
        **sized("full_das_layer"),
    shell:
        f"{PLOTLIB} das-layer {RUN_ARGS} --method 'Full DAS' --layer {{wildcards.layer}} 2> {{log}}"


rule full_das_select:
    input:
        spec=SPEC,
        model=P.model,
        scores=lambda wc: [P.das_scores("Full DAS", layer).format(**wc) for layer in layers_of(wc)],
        **DAS_BANKS,
    output:
        accuracy=P.accuracy("Full DAS"),
        runtime=P.runtime("select_Full DAS"),
    params:
        layers=lambda wc: " ".join(layers_of(wc)),
    log:
        P.log("full_das_select"),
    benchmark:
        P.benchmark("full_das_select")
    threads: THREADS
    resources:
        **sized("full_das_select"),
    group:
        "select"
    shell:
        f"{PLOTLIB} das-select {RUN_ARGS} --method 'Full DAS' --layers {{params.layers}} 2> {{log}}"


rule plot_das:
    input:
        spec=SPEC,
        model=P.model,
        handles=P.handles("PLOT"),
        **DAS_BANKS,
    output:
        accuracy=P.accuracy("PLOT-DAS"),
        scores=P.das_scores("PLOT-DAS", "guided"),
        bases=P.das_bases("PLOT-DAS", "guided"),
        runtime=P.runtime("das_PLOT-DAS"),
        select_runtime=P.runtime("select_PLOT-DAS"),
    log:
        P.log("plot_das"),
    benchmark:
        P.benchmark("plot_das")
    threads: THREADS
    resources:
        **sized("plot_das"),
    shell:
        f"{PLOTLIB} guided-das {RUN_ARGS} --method PLOT-DAS --guide PLOT 2> {{log}}"
