# PLOT: signatures on the fit bank, couplings over the solver grids, handles calibrated and tested.
# Grid 'coarse' is Stage A (or the single stage); 'native' and 'pca' are Stage B, inside each
# variable's PLOT location, so their rules read the Stage A handles.


rule signatures:
    input:
        unpack(signature_inputs),
    output:
        signatures=P.signatures("{grid}"),
        bases=P.bases("{grid}"),
        runtime=P.runtime("signatures_{grid}"),
    log:
        P.log("signatures_{grid}"),
    benchmark:
        P.benchmark("signatures_{grid}")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("signatures"),
    group:
        "plot"
    shell:
        f"{PLOTLIB} signatures {RUN_ARGS} --grid {{wildcards.grid}} 2> {{log}}"


rule couple:
    input:
        spec=SPEC,
        signatures=P.signatures("{grid}"),
    output:
        couplings=P.couplings("{grid}"),
        runtime=P.runtime("couple_{grid}"),
    params:
        methods=lambda wc: " ".join(f"'{m}'" for m in coupling_methods(METHODS_OF[wc.benchmark], wc.grid)),
    log:
        P.log("couple_{grid}"),
    benchmark:
        P.benchmark("couple_{grid}")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("couple"),
    group:
        "plot"
    shell:
        f"{PLOTLIB} couple {RUN_ARGS} --grid {{wildcards.grid}} --methods {{params.methods}} 2> {{log}}"


rule calibrate:
    input:
        unpack(calibrate_inputs),
    output:
        handles=P.handles("{method}"),
        calibration=P.calibration("{method}"),
        accuracy=P.accuracy("{method}"),
        runtime=P.runtime("calibrate_{method}"),
    wildcard_constraints:
        method="|".join(slug(m) for m, spec in METHOD_TABLE.items() if spec.kind == "handle"),
    params:
        method=lambda wc: METHOD_BY_SLUG[wc.method],
    log:
        P.log("calibrate_{method}"),
    benchmark:
        P.benchmark("calibrate_{method}")
    conda:
        "../../environment.yml"
    threads: THREADS
    resources:
        **sized("calibrate"),
    group:
        "plot"
    shell:
        f"{PLOTLIB} calibrate {RUN_ARGS} --method '{{params.method}}' 2> {{log}}"
