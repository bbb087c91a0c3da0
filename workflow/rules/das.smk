# DAS: Full DAS fans out one job per coarse layer (a cluster runs them in parallel), then selects on
# calibration and tests once; guided DAS (PLOT-DAS, PLOT-native-DAS, PLOT-PCA-DAS) trains only where
# its guide's handle points.

DAS_BANKS = {f"{kind}_{s}": getattr(P, kind)(s) for kind in ("bank", "cache") for s in ("das_train", "calibration", "test")}


rule full_das_layer:
    input:
        spec=SPEC,
        model=P.model,
        **DAS_BANKS,
    output:
        scores=P.das_scores("Full DAS", "{layer}"),
        bases=P.das_bases("Full DAS", "{layer}"),
        runtime=P.runtime("das_Full DAS", "{layer}"),
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


def guided_inputs(wildcards):
    guide = METHOD_TABLE[METHOD_TABLE[METHOD_BY_SLUG[wildcards.method]].parent]
    needs = {"spec": SPEC, "model": P.model, "handles": P.handles(guide.name), **DAS_BANKS}
    if guide.grid != "coarse":
        needs["bases"] = P.bases(guide.grid)
    return {k: v.format(**wildcards) for k, v in needs.items()}


rule guided_das:
    input:
        unpack(guided_inputs),
    output:
        accuracy=P.accuracy("{method}"),
        scores=P.das_scores("{method}", "guided"),
        bases=P.das_bases("{method}", "guided"),
        runtime=P.runtime("das_{method}"),
        select_runtime=P.runtime("select_{method}"),
    wildcard_constraints:
        method="|".join(slug(m) for m, spec in METHOD_TABLE.items() if spec.kind == "das" and spec.parent),
    params:
        method=lambda wc: METHOD_BY_SLUG[wc.method],
    log:
        P.log("guided_das_{method}"),
    benchmark:
        P.benchmark("guided_das_{method}")
    threads: THREADS
    resources:
        **sized("guided_das"),
    shell:
        f"{PLOTLIB} guided-das {RUN_ARGS} --method '{{params.method}}' 2> {{log}}"
