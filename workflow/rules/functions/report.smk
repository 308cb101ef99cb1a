# Helpers of the report rules (workflow/rules/report.smk): paths, job settings, study targets.
from pathlib import Path


def report_file(study):
    return f"{REPORTS}/{study}/report.html"


def report_inputs(wildcards):
    own = report_file(wildcards.study)
    return [path for path in study_targets(wildcards.study) if path != own]


STUDY_TARGETS.append(lambda study: [report_file(study)])
