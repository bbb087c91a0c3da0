# DAS: Full DAS fans out one job per coarse location (a cluster runs them in parallel), then selects on
# calibration and tests once; guided DAS (PLOT-DAS, PLOT-native-DAS, PLOT-PCA-DAS, brute-force-DAS) trains
# only where its guide's handle points, random-DAS at a random coarse location per variable.

DAS_BANKS = {f"{kind}_{s}": getattr(P, kind)(s) for kind in ("bank", "cache") for s in ("das_train", "calibration", "test")}


rule full_das_location:
    input:
        spec=SPEC,
        model=P.model,
        **DAS_BANKS,
    output:
        scores=P.das_scores("Full DAS", "{location}"),
        bases=P.das_bases("Full DAS", "{location}"),
        runtime=P.runtime("das_Full DAS", "{location}"),
    log:
        P.log("full_das_{location}"),
    benchmark:
        P.benchmark("full_das_{location}")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("full_das_location"),
    shell:
        f"{PLOTLIB} das-location {RUN_ARGS} --method 'Full DAS' --location {{wildcards.location}} 2> {{log}}"


rule full_das_select:
    input:
        spec=SPEC,
        model=P.model,
        scores=lambda wc: [P.das_scores("Full DAS", location).format(**wc) for location in locations_of(wc)],
        **DAS_BANKS,
    output:
        accuracy=P.accuracy("Full DAS"),
        runtime=P.runtime("select_Full DAS"),
    params:
        locations=lambda wc: " ".join(locations_of(wc)),
    log:
        P.log("full_das_select"),
    benchmark:
        P.benchmark("full_das_select")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("full_das_select"),
    group:
        "select"
    shell:
        f"{PLOTLIB} das-select {RUN_ARGS} --method 'Full DAS' --locations {{params.locations}} 2> {{log}}"


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
        method="|".join(slug(m) for m, spec in METHOD_TABLE.items() if spec.kind == "das" and spec.where != "every"),
    params:
        method=lambda wc: METHOD_BY_SLUG[wc.method],
    log:
        P.log("guided_das_{method}"),
    benchmark:
        P.benchmark("guided_das_{method}")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("guided_das"),
    shell:
        f"{PLOTLIB} guided-das {RUN_ARGS} --method '{{params.method}}' 2> {{log}}"
