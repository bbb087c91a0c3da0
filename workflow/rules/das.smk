# DAS: Full DAS (and Full Boundless DAS, Full DBM) fans out one job per coarse location (a cluster runs
# them in parallel), then selects on calibration and tests once; guided DAS (PLOT-DAS, PLOT-native-DAS,
# PLOT-PCA-DAS, brute-force-DAS, ...) trains only where its guide's handle points, random-DAS at a random
# coarse location per variable.

DAS_BANKS = {f"{kind}_{s}": getattr(P, kind)(s) for kind in ("bank", "cache") for s in ("das_train", "calibration", "test")}
EVERY_LOCATION = "|".join(slug(m) for m, spec in METHOD_TABLE.items() if spec.kind == "das" and spec.where == "every")


rule full_das_location:
    input:
        spec=SPEC,
        model=P.model,
        **DAS_BANKS,
    output:
        scores=P.das_scores("{method}", "{location}"),
        bases=P.das_bases("{method}", "{location}"),
        runtime=P.runtime("das_{method}", "{location}"),
    wildcard_constraints:
        method=EVERY_LOCATION,
    params:
        method=lambda wc: METHOD_BY_SLUG[wc.method],
    log:
        P.log("{method}_{location}"),
    benchmark:
        P.benchmark("{method}_{location}")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("full_das_location"),
    shell:
        f"{PLOTLIB} das-location {RUN_ARGS} --method '{{params.method}}' --location {{wildcards.location}} 2> {{log}}"


rule full_das_select:
    input:
        spec=SPEC,
        model=P.model,
        scores=lambda wc: [P.das_scores("{method}", location).format(**wc) for location in locations_of(wc)],
        **DAS_BANKS,
    output:
        accuracy=P.accuracy("{method}"),
        runtime=P.runtime("select_{method}"),
    wildcard_constraints:
        method=EVERY_LOCATION,
    params:
        method=lambda wc: METHOD_BY_SLUG[wc.method],
        locations=lambda wc: " ".join(locations_of(wc)),
    log:
        P.log("{method}_select"),
    benchmark:
        P.benchmark("{method}_select")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("full_das_select"),
    group:
        "select"
    shell:
        f"{PLOTLIB} das-select {RUN_ARGS} --method '{{params.method}}' --locations {{params.locations}} 2> {{log}}"


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
