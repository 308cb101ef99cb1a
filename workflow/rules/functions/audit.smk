# Helpers of the audit rules (workflow/rules/audit.smk): paths, job settings, study targets.
from smoothsqueeze import audit_settings as ssaudit


try:
    AUDIT_SETTINGS = {name: ssaudit.resolve_settings(st, name) for name, st in config["studies"].items()}
except PipelineError as _err:
    sys.exit(str(_err))


def audit_file(study, model):
    return f"{RESULTS}/{study}/audit/{model}.json"


def audit_table_file(study, ext):
    return f"{REPORTS}/{study}/tables/audit.{ext}"


def audit_spec(wildcards):
    st = study_cfg(wildcards.study)
    return as_json(
        {
            "settings": AUDIT_SETTINGS[wildcards.study],
            "architecture": st["architecture"],
            "info": {
                "study": wildcards.study,
                "model_id": wildcards.model,
                "dataset": st["dataset"],
                "entry": sscfg.grid_entry(config, wildcards.study, wildcards.model),
                "study_eps": st["attack"]["eps"],
            },
        }
    )


def audit_targets(study):
    return [audit_file(study, m) for m in model_ids(study)] + [audit_table_file(study, ext) for ext in ("csv", "tex", "html")]


STUDY_TARGETS.append(audit_targets)
