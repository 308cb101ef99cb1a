# Tables stage: one CSV row per model (a target of its own: reports/<study>/rows/<model>.csv
# needs only that model's record, plus its analysis summary for Table 1's natural and
# adversarial models), aggregated into the study's tables (CSV, LaTeX, HTML) and, for
# MNIST / CIFAR-10 at the paper's eps, into side-by-side comparisons with the paper
# (reports/<study>/tables/paper_table{1,5,6,7}.*). The digits demo, or a study at another eps,
# has no paper counterpart and so no comparison table.


localrules:
    table_row,
    study_table,
    paper_comparison,


rule table_row:
    input:
        unpack(row_inputs),
    output:
        f"{REPORTS}/{{study}}/rows/{{model}}.csv",
    params:
        analysis=lambda w, input: ["--analysis", input.analysis] if "analysis" in input.keys() else [],
        version=TABLES_VERSION,
    conda:
        ANALYSIS_ENV
    log:
        f"{REPORTS}/{{study}}/logs/rows/{{model}}.log",
    shell:
        "python -m smoothsqueeze table-row --record {input.record:q} {params.analysis:q} --out {output:q} > {log:q} 2>&1"


rule study_table:
    wildcard_constraints:
        table="|".join(sstables.STUDY_TABLES),
    input:
        rows=table_rows,
    output:
        **table_outputs("{table}", "../report/tables/study_table.rst", lambda w: w.table),
    params:
        spec=lambda w: as_json(tables_spec(w.study)),
        facts=table_caption_facts,
        version=TABLES_VERSION,
    conda:
        ANALYSIS_ENV
    log:
        f"{REPORTS}/{{study}}/logs/tables/{{table}}.log",
    shell:
        "python -m smoothsqueeze table {wildcards.table} --spec {params.spec:q} --rows {input.rows:q} "
        "--csv {output.csv:q} --tex {output.tex:q} --html {output.html:q} > {log:q} 2>&1"


rule paper_comparison:
    wildcard_constraints:
        paper_table="|".join(sspaper.PAPER_TABLES),
    input:
        rows=table_rows,
        paper=lambda w: str(sspaper.paper_path(w.paper_table)),
    output:
        **table_outputs("paper_{paper_table}", "../report/tables/paper_comparison.rst", lambda w: f"paper {w.paper_table}"),
    params:
        spec=lambda w: as_json(tables_spec(w.study)),
        facts=table_caption_facts,
        version=TABLES_VERSION,
    conda:
        ANALYSIS_ENV
    log:
        f"{REPORTS}/{{study}}/logs/tables/paper_{{paper_table}}.log",
    shell:
        "python -m smoothsqueeze compare {wildcards.paper_table} --spec {params.spec:q} --rows {input.rows:q} "
        "--paper-csv {input.paper:q} --csv {output.csv:q} --tex {output.tex:q} --html {output.html:q} > {log:q} 2>&1"
