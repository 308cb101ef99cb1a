# Gradient-masking audit (beyond the paper): one job per model runs AutoAttack, multi-restart
# PGD, a PGD steps sweep and a large-eps attack, and the Carlini et al. sanity checks; one
# table per study sets each model's claimed robustness against its audited robustness.
# Settings: the study's `audit:` block over the defaults in smoothsqueeze/audit.py.


localrules:
    audit_table,


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
    conda:
        TORCH_ENV
    log:
        f"{RESULTS}/{{study}}/logs/audit/{{model}}.log",
    shell:
        "python -m smoothsqueeze audit --spec {params.spec:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} --record {input.record:q} --out {output:q} > {log:q} 2>&1"


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
    conda:
        TORCH_ENV
    log:
        f"{REPORTS}/{{study}}/logs/tables/audit.log",
    shell:
        "python -m smoothsqueeze audit-table --audits {input:q} --csv {output.csv:q} --tex {output.tex:q} "
        "--html {output.html:q} > {log:q} 2>&1"
