# Input functions and report helpers of the rule files, kept apart from the rules (snakemake --lint).
# They run only when called (the input functions while the DAG is built, _figure_report while
# report.smk is read), so they may use names the rule files define later (DAS_BANKS, FIGURES).


# plot.smk: the signatures and calibrate inputs.
def signature_inputs(wildcards):
    needs = {"spec": SPEC, "model": P.model, "bank": P.bank("fit"), "cache": P.cache("fit")}
    if wildcards.grid != "coarse":
        needs["stage_a"] = P.handles("PLOT")
    return {k: v.format(**wildcards) for k, v in needs.items()}


def calibrate_inputs(wildcards):
    method = METHOD_TABLE[METHOD_BY_SLUG[wildcards.method]]
    needs = {"spec": SPEC, "model": P.model}
    needs.update({f"{kind}_{s}": getattr(P, kind)(s) for kind in ("bank", "cache") for s in ("calibration", "test")})
    if method.solver != "onehot":
        needs["couplings"] = P.couplings(method.grid)
    if method.grid != "coarse":
        needs["bases"] = P.bases(method.grid)
    return {k: v.format(**wildcards) for k, v in needs.items()}


# das.smk: the guided_das inputs.
def guided_inputs(wildcards):
    parent = METHOD_TABLE[METHOD_BY_SLUG[wildcards.method]].parent
    needs = {"spec": SPEC, "model": P.model, **DAS_BANKS}
    if parent:  # random-DAS has no guide
        needs["handles"] = P.handles(parent)
        if METHOD_TABLE[parent].grid != "coarse":  # a Stage B guide: its basis, and its coupling for mass supports
            needs["bases"] = P.bases(METHOD_TABLE[parent].grid)
            needs["couplings"] = P.couplings(METHOD_TABLE[parent].grid)
    return {k: v.format(**wildcards) for k, v in needs.items()}


# report.smk: one figure's report() entry.
# Caption file and report subcategory per figure kind; every coupling_<method> figure shares the last.
FIGURE_KINDS = {"runtime_vs_iia": ("runtime_vs_iia", "runtime versus IIA"), "layer_token": ("layer_token", "layer x token")}
COUPLING_KIND = ("coupling", "couplings")


def _figure_report(bench, kind):
    caption, subcategory = FIGURE_KINDS.get(kind, COUPLING_KIND)
    return report(FIGURES[bench, kind], caption=f"../report/{caption}.rst", category=bench, subcategory=subcategory,
                  labels={"benchmark": bench, "figure": kind.replace("_", " ")})
