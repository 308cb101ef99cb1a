# Tables stage: one CSV row per model (a target of its own: reports/<study>/rows/<model>.csv
# needs only that model's record, plus its analysis summary for Table 1's natural and
# adversarial models), aggregated into the study's tables (CSV, LaTeX, HTML) and, for
# MNIST / CIFAR-10 at the paper's eps, into side-by-side comparisons with the paper
# (reports/<study>/tables/paper_table{1,5,6,7}.*). The digits demo, or a study at another eps,
# has no paper counterpart and so no comparison table.
from smoothsqueeze import paper as sspaper
from smoothsqueeze import tables as sstables


localrules:
    table_row,
    study_table,
    paper_comparison,


TABLES_VERSION = f"{CODE_VERSION}-tables2"
TABLE_LAYOUTS = ("combined", "split")

for _name, _st in config["studies"].items():
    if _st.get("analysis", {}).get("table_layout", "combined") not in TABLE_LAYOUTS:
        sys.exit(
            f"config error: studies.{_name}.analysis.table_layout = {_st['analysis']['table_layout']!r}: "
            f"must be one of {list(TABLE_LAYOUTS)}"
        )


def row_file(study, model):
    return f"{REPORTS}/{study}/rows/{model}.csv"


def table_file(study, name, ext):
    return f"{REPORTS}/{study}/tables/{name}.{ext}"


def study_table_names(study):
    """Paper layout: 'accuracy' (Tables 2/5) by default; 'whitebox' + 'blackbox' (Tables 3/6, 4/7) for CIFAR-10.

    A study's `analysis: {table_layout: combined | split}` overrides the default.
    """
    st = study_cfg(study)
    layout = st.get("analysis", {}).get("table_layout", "split" if st["dataset"] == "cifar10" else "combined")
    return (["whitebox", "blackbox"] if layout == "split" else ["accuracy"]) + ["eq4"]


def paper_table_names(study):
    st = study_cfg(study)
    return sspaper.tables_for(st["dataset"], st["attack"]["eps"] / st.get("pixel_units", 1))


def tables_spec(study):
    """The study facts the tables need (attack names decide the columns)."""
    st = study_cfg(study)
    return {
        "study": study,
        "dataset": st["dataset"],
        "eps": st["attack"]["eps"],
        "pixel_units": st.get("pixel_units", 1),
        "whitebox": [{"name": a["name"], "method": a["method"]} for a in st["attack"]["whitebox"]],
        "blackbox": [{"name": a["name"], "method": a["method"]} for a in st["blackbox"]["attacks"]],
        "blackbox_source": st["blackbox"]["source"],
    }


def table_caption_facts(wildcards):
    """Plain-text settings for the report captions (workflow/report/tables/*.rst)."""
    spec = tables_spec(wildcards.study)
    return {
        "eps": sstables.eps_text(spec),
        "whitebox": ", ".join(a["name"] for a in spec["whitebox"]),
        "blackbox": ", ".join(a["name"] for a in spec["blackbox"]),
        "source": spec["blackbox_source"],
        "dataset": spec["dataset"],
    }


def row_inputs(wildcards):
    entry = sscfg.grid_entry(config, wildcards.study, wildcards.model)
    inputs = {"record": record_file(wildcards.study, wildcards.model)}
    if sstables.model_kind(entry) in ("natural", "adversarial"):
        inputs["analysis"] = analysis_summary_file(wildcards.study, wildcards.model)
    return inputs


def table_rows(wildcards):
    models = model_ids(wildcards.study)
    if wildcards.get("table") == "eq4":
        models = [m for m in models if sstables.model_kind(sscfg.grid_entry(config, wildcards.study, m)) != "regularized"]
    return [row_file(wildcards.study, m) for m in models]


def table_outputs(name_pattern, caption, title):
    """CSV, LaTeX and HTML of one table; all three in the report (the HTML is shown inline)."""
    return {
        ext: report(
            table_file("{study}", name_pattern, ext),
            caption=caption,
            category="Tables",
            subcategory="{study}",
            labels=lambda w, ext=ext: {"study": w.study, "table": title(w), "format": {"html": "view", "csv": "CSV", "tex": "LaTeX"}[ext]},
        )
        for ext in ("html", "csv", "tex")
    }


def table_targets(study):
    names = study_table_names(study) + [f"paper_{p}" for p in paper_table_names(study)]
    return [row_file(study, m) for m in model_ids(study)] + [
        table_file(study, name, ext) for name in names for ext in ("csv", "tex", "html")
    ]


STUDY_TARGETS.append(table_targets)


rule table_row:
    input:
        unpack(row_inputs),
    output:
        f"{REPORTS}/{{study}}/rows/{{model}}.csv",
    params:
        analysis=lambda w, input: f"--analysis {input.analysis}" if "analysis" in input.keys() else "",
        version=TABLES_VERSION,
    log:
        f"{REPORTS}/{{study}}/logs/rows/{{model}}.log",
    shell:
        "{PYTHON} -m smoothsqueeze.tables row --record {input.record} {params.analysis} --out {output} > {log} 2>&1"


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
    log:
        f"{REPORTS}/{{study}}/logs/tables/{{table}}.log",
    shell:
        "{PYTHON} -m smoothsqueeze.tables table {wildcards.table} --spec {params.spec:q} --rows {input.rows} "
        "--csv {output.csv} --tex {output.tex} --html {output.html} > {log} 2>&1"


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
    log:
        f"{REPORTS}/{{study}}/logs/tables/paper_{{paper_table}}.log",
    shell:
        "{PYTHON} -m smoothsqueeze.tables compare {wildcards.paper_table} --spec {params.spec:q} --rows {input.rows} "
        "--paper-csv {input.paper} --csv {output.csv} --tex {output.tex} --html {output.html} > {log} 2>&1"
