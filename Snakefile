# smoothsqueeze: reproduce and audit "Label smoothing and logit squeezing: a replacement for
# adversarial training?" One cached stage per rule; logic lives in workflow/smoothsqueeze.
# Every workflow/rules/*.smk is included (common.smk first); each stage registers the final
# files of a study in STUDY_TARGETS, and the study targets below collect them.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


for _rules in sorted(Path(workflow.basedir, "workflow", "rules").glob("*.smk")):
    if _rules.name != "common.smk":

        include: str(_rules)


rule all:
    default_target: True
    input:
        study_targets(config["default_study"]),


for _study in config["studies"]:

    rule:
        name:
            _study
        input:
            study_targets(_study),
