# The claims ledger (smoothsqueeze.claims): every claim of the paper decided from one study's
# artifacts, reports/<study>/claims.{csv,md,tex,html}, and every built study side by side,
# reports/claims.{csv,md,html}. The claims job's inputs are exactly the files it reads (records,
# audits, analysis arrays, metrics, the cost table), so it reruns when one of them changes, and only then.
import os

from smoothsqueeze.study import CLAIMS_FORMATS, CLAIMS_OVERVIEW_FORMATS, FORMAT_LABELS, STAGE_VERSIONS, Plan, as_json

plan = Plan(config)


localrules:
    claims,
    claims_overview,


rule claims:
    input:
        unpack(lambda w: plan.claims_inputs(w.study)),
    output:
        **{
            ext: (
                report(
                    plan.paths.claims("{study}", ext),
                    caption="../report/claims.rst",
                    category="Claims",
                    subcategory="{study}",
                    labels={"study": "{study}", "table": "claims ledger", "format": "view"},
                )
                if ext == "html"
                else plan.paths.claims("{study}", ext)
            )
            for ext in CLAIMS_FORMATS
        },
    params:
        spec=lambda w: as_json(plan.claims_spec(w.study)),
        version=STAGE_VERSIONS["claims"],
    conda:
        "../../envs/analysis.yaml"
    log:
        plan.paths.report_log("{study}", "claims"),
    shell:
        "python -m smoothsqueeze claims --study {wildcards.study} --spec {params.spec:q} --csv {output.csv:q} "
        "--md {output.md:q} --tex {output.tex:q} --html {output.html:q} > {log:q} 2>&1"


rule claims_overview:
    input:
        # Every study whose ledger exists when the DAG is made, and every study this run builds.
        ledgers=lambda w: plan.claims_overview_inputs(workflow.dag_settings.targets, os.path.exists),
    output:
        **{ext: plan.paths.claims_overview(ext) for ext in CLAIMS_OVERVIEW_FORMATS},
    params:
        version=STAGE_VERSIONS["claims_overview"],
    conda:
        "../../envs/analysis.yaml"
    log:
        f"{config['reports_dir']}/logs/claims_overview.log",
    shell:
        "python -m smoothsqueeze claims-overview --ledgers {input.ledgers:q} --csv {output.csv:q} --md {output.md:q} "
        "--html {output.html:q} > {log:q} 2>&1"
