# Tables stage: one CSV row per model (a target of its own: reports/<study>/rows/<model>.csv
# needs only that model's record, plus its analysis summary for Table 1's natural and
# adversarial models), aggregated into the study's tables (CSV, LaTeX, HTML) and, for
# MNIST / CIFAR-10 at the paper's eps, into side-by-side comparisons with the paper
# (reports/<study>/tables/paper_table{1,5,6,7}.*). The digits demo, or a study at another eps,
# has no paper counterpart and so no comparison table.
from smoothsqueeze.study import (
    FORMAT_LABELS,
    PAPER_TABLE_FILES,
    STAGE_VERSIONS,
    STUDY_TABLE_NAMES,
    TABLE_FORMATS,
    Plan,
    as_json,
    paper_csv,
)

plan = Plan(config)


localrules:
    table_row,
    study_table,
    paper_comparison,


rule table_row:
    input:
        unpack(lambda w: plan.row_inputs(w.study, w.model)),
    output:
        plan.paths.row("{study}", "{model}"),
    params:
        analysis=lambda w, input: ["--analysis", input.analysis] if "analysis" in input.keys() else [],
        version=STAGE_VERSIONS["table_row"],
    conda:
        "../../envs/analysis.yaml"
    log:
        plan.paths.report_log("{study}", "rows/{model}"),
    shell:
        "python -m smoothsqueeze table-row --record {input.record:q} {params.analysis:q} --out {output:q} > {log:q} 2>&1"


rule study_table:
    wildcard_constraints:
        table="|".join(STUDY_TABLE_NAMES),
    input:
        rows=lambda w: plan.table_rows(w.study, w.table),
    output:
        **{
            ext: report(
                plan.paths.table("{study}", "{table}", ext),
                caption="../report/tables/study_table.rst",
                category="Tables",
                subcategory="{study}",
                labels=lambda w, ext=ext: {"study": w.study, "table": w.table, "format": FORMAT_LABELS[ext]},
            )
            for ext in TABLE_FORMATS
        },
    params:
        spec=lambda w: as_json(plan.tables_spec(w.study)),
        facts=lambda w: plan.table_caption_facts(w.study),
        version=STAGE_VERSIONS["study_table"],
    conda:
        "../../envs/analysis.yaml"
    log:
        plan.paths.report_log("{study}", "tables/{table}"),
    shell:
        "python -m smoothsqueeze table {wildcards.table} --spec {params.spec:q} --rows {input.rows:q} "
        "--csv {output.csv:q} --tex {output.tex:q} --html {output.html:q} > {log:q} 2>&1"


rule paper_comparison:
    wildcard_constraints:
        paper_table="|".join(PAPER_TABLE_FILES),
    input:
        rows=lambda w: plan.table_rows(w.study),
        paper=lambda w: str(paper_csv(w.paper_table)),
    output:
        **{
            ext: report(
                plan.paths.table("{study}", "paper_{paper_table}", ext),
                caption="../report/tables/paper_comparison.rst",
                category="Tables",
                subcategory="{study}",
                labels=lambda w, ext=ext: {"study": w.study, "table": f"paper {w.paper_table}", "format": FORMAT_LABELS[ext]},
            )
            for ext in TABLE_FORMATS
        },
    params:
        spec=lambda w: as_json(plan.tables_spec(w.study)),
        facts=lambda w: plan.table_caption_facts(w.study),
        version=STAGE_VERSIONS["paper_comparison"],
    conda:
        "../../envs/analysis.yaml"
    log:
        plan.paths.report_log("{study}", "tables/paper_{paper_table}"),
    shell:
        "python -m smoothsqueeze compare {wildcards.paper_table} --spec {params.spec:q} --rows {input.rows:q} "
        "--paper-csv {input.paper:q} --csv {output.csv:q} --tex {output.tex:q} --html {output.html:q} > {log:q} 2>&1"
