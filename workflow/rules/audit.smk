# Gradient-masking audit (beyond the paper): one job per model runs AutoAttack, multi-restart
# PGD, a PGD steps sweep and a large-eps attack, and the Carlini et al. sanity checks; one
# table per study sets each model's claimed robustness against its audited robustness.
# Settings: the study's `audit:` block, typed with its defaults in the config schema.
from smoothsqueeze.study import FORMAT_LABELS, STAGE_VERSIONS, TABLE_FORMATS, Plan, as_json

plan = Plan(config)


localrules:
    audit_table,


rule audit:
    input:
        checkpoint=lambda w: plan.paths.checkpoint(w.study, w.model),
        data=lambda w: plan.dataset_file(w.study),
        record=lambda w: plan.paths.record(w.study, w.model),
    output:
        plan.paths.audit("{study}", "{model}"),
    params:
        gpu_job_slots=lambda w: plan.gpu_job_slots(w.study),
        spec=lambda w: as_json(plan.audit_spec(w.study, w.model)),
        version=STAGE_VERSIONS["audit"],
    resources:
        gpu=lambda w: plan.gpu_slots(w.study),
    conda:
        "../../envs/torch.yaml"
    log:
        plan.paths.log("{study}", "audit", "{model}"),
    shell:
        "SMOOTHSQUEEZE_GPU_JOB_SLOTS={params.gpu_job_slots} python -m smoothsqueeze audit --spec {params.spec:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} --record {input.record:q} --out {output:q} > {log:q} 2>&1"


rule audit_table:
    input:
        lambda w: [plan.paths.audit(w.study, m) for m in plan.model_ids(w.study)],
    output:
        **{
            ext: report(
                plan.paths.table("{study}", "audit", ext),
                caption="../report/audit/audit_table.rst",
                category="Masking audit",  # after "Claims" in the report's alphabetical menu: the ledger comes first
                subcategory="{study}",
                labels={"study": "{study}", "table": "audit", "format": FORMAT_LABELS[ext]},
            )
            for ext in TABLE_FORMATS
        },
    params:
        version=STAGE_VERSIONS["audit_table"],
    conda:
        "../../envs/torch.yaml"
    log:
        plan.paths.report_log("{study}", "tables/audit"),
    shell:
        "python -m smoothsqueeze audit-table --audits {input:q} --csv {output.csv:q} --tex {output.tex:q} "
        "--html {output.html:q} > {log:q} 2>&1"
