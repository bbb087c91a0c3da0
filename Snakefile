# plotlib: PLOT versus exhaustive DAS as a Snakemake workflow. Run `snakemake --cores 2`.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/helpers.smk"
include: "workflow/rules/backbone.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/plot.smk"
include: "workflow/rules/das.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT_OUTPUTS,
    default_target: True
