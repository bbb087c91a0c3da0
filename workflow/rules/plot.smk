# PLOT: signatures on the fit bank, couplings over the solver grids, handles calibrated and tested.


rule signatures:
    input:
        spec=SPEC,
        model=P.model,
        bank=P.bank("fit"),
        cache=P.cache("fit"),
    output:
        signatures=P.signatures,
        runtime=P.runtime("signatures"),
    log:
        P.log("signatures"),
    benchmark:
        P.benchmark("signatures")
    threads: THREADS
    resources:
        **sized("signatures"),
    group:
        "plot"
    shell:
        f"{PLOTLIB} signatures {RUN_ARGS} 2> {{log}}"


rule couple:
    input:
        spec=SPEC,
        signatures=P.signatures,
    output:
        couplings=P.couplings,
        runtime=P.runtime("couple"),
    params:
        methods=" ".join(f"'{m}'" for m in METHODS if m in COUPLING_METHODS),
    log:
        P.log("couple"),
    benchmark:
        P.benchmark("couple")
    threads: THREADS
    resources:
        **sized("couple"),
    group:
        "plot"
    shell:
        f"{PLOTLIB} couple {RUN_ARGS} --methods {{params.methods}} 2> {{log}}"


def calibrate_inputs(wildcards):
    needs = {"spec": SPEC.format(**wildcards), "model": P.model.format(**wildcards)}
    needs.update({f"{kind}_{s}": getattr(P, kind)(s).format(**wildcards) for kind in ("bank", "cache") for s in ("calibration", "test")})
    if METHOD_BY_SLUG[wildcards.method] in COUPLING_METHODS:
        needs["couplings"] = P.couplings.format(**wildcards)
    return needs


rule calibrate:
    input:
        unpack(calibrate_inputs),
    output:
        handles=P.handles("{method}"),
        calibration=P.calibration("{method}"),
        accuracy=P.accuracy("{method}"),
        runtime=P.runtime("calibrate_{method}"),
    wildcard_constraints:
        method="|".join(slug(m) for m in METHODS if m in COUPLING_METHODS or m == "brute-force") or "none",
    params:
        method=lambda wc: METHOD_BY_SLUG[wc.method],
    log:
        P.log("calibrate_{method}"),
    benchmark:
        P.benchmark("calibrate_{method}")
    threads: THREADS
    resources:
        **sized("calibrate"),
    group:
        "plot"
    shell:
        f"{PLOTLIB} calibrate {RUN_ARGS} --method '{{params.method}}' 2> {{log}}"
