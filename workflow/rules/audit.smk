# Gradient-masking audit (beyond the paper): one job per model runs AutoAttack, multi-restart
# PGD, a PGD steps sweep and a large-eps attack, and the Carlini et al. sanity checks; one
# table per study sets each model's claimed robustness against its audited robustness.
# Settings: the study's `audit:` block over the defaults in smoothsqueeze/audit.py.
from smoothsqueeze import audit as ssaudit


localrules:
    audit_table,


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


rule audit:
    input:
        checkpoint=lambda w: checkpoint_file(w.study, w.model),
        data=lambda w: dataset_file(w.study),
        record=lambda w: record_file(w.study, w.model),
    output:
        f"{RESULTS}/{{study}}/audit/{{model}}.json",
    params:
        spec=audit_spec,
        version=f"{CODE_VERSION}-audit1",
    resources:
        gpu=1,
    log:
        f"{RESULTS}/{{study}}/logs/audit/{{model}}.log",
    shell:
        "{PYTHON} -m smoothsqueeze.audit model --spec {params.spec:q} --checkpoint {input.checkpoint} "
        "--data {input.data} --record {input.record} --out {output} > {log} 2>&1"


rule audit_table:
    input:
        lambda w: [audit_file(w.study, m) for m in model_ids(w.study)],
    output:
        **{
            ext: report(
                f"{REPORTS}/{{study}}/tables/audit.{ext}",
                caption="../report/audit/audit_table.rst",
                category="Audit",
                subcategory="{study}",
                labels={"study": "{study}", "table": "audit", "format": {"html": "view", "csv": "CSV", "tex": "LaTeX"}[ext]},
            )
            for ext in ("html", "csv", "tex")
        },
    params:
        version=f"{CODE_VERSION}-audit1",
    log:
        f"{REPORTS}/{{study}}/logs/tables/audit.log",
    shell:
        "{PYTHON} -m smoothsqueeze.audit table --audits {input} --csv {output.csv} --tex {output.tex} "
        "--html {output.html} > {log} 2>&1"
