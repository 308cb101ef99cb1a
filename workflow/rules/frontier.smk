# Robustness per training cost (smoothsqueeze.frontier): one point per defense, x its training cost
# relative to the natural model, y its accuracy under the audit's per-image strongest attack, the
# Pareto frontier marked. reports/<study>/frontier.{csv,tex,html,pdf,png} and frontier.figure.tex.
# Its inputs are exactly the files it reads (records, audits, metrics, the cost table).
from smoothsqueeze.study import FRONTIER_FILES, STAGE_VERSIONS, Plan, as_json

plan = Plan(config)


localrules:
    frontier,


rule frontier:
    input:
        unpack(lambda w: plan.frontier_inputs(w.study)),
    output:
        **{
            name: (
                report(
                    plan.paths.frontier("{study}", ext),
                    caption="../report/frontier.rst",
                    category="Frontier",
                    subcategory="{study}",
                    labels={"study": "{study}", "frontier": "figure" if name == "png" else "table", "format": "view"},
                )
                if name in ("png", "html")
                else plan.paths.frontier("{study}", ext)
            )
            for name, ext in FRONTIER_FILES.items()
        },
    params:
        spec=lambda w: as_json(plan.frontier_spec(w.study)),
        version=STAGE_VERSIONS["frontier"],
    conda:
        "../../envs/analysis.yaml"
    log:
        plan.paths.report_log("{study}", "frontier"),
    shell:
        "python -m smoothsqueeze frontier --study {wildcards.study} --spec {params.spec:q} --csv {output.csv:q} --tex {output.tex:q} "
        "--html {output.html:q} --pdf {output.pdf:q} --png {output.png:q} --figure-tex {output.figure_tex:q} > {log:q} 2>&1"
