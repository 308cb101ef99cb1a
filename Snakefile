# smoothsqueeze: reproduce and audit "Label smoothing and logit squeezing: a replacement for
# adversarial training?" One cached stage per rule; logic lives in workflow/smoothsqueeze.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        lambda wildcards: study_targets(config["default_study"]),


for _study in config["studies"]:

    rule:
        name:
            _study
        input:
            study_targets(_study),
