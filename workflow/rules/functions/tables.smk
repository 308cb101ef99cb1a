# Helpers of the tables rules (workflow/rules/tables.smk): paths, job settings, study targets.
from smoothsqueeze import paper as sspaper
from smoothsqueeze import tables as sstables


TABLES_VERSION = f"{CODE_VERSION}-tables3"
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
        "squeeze_norm": st["train"].get("squeeze_norm"),
        "lr_milestones": st["train"].get("lr_milestones", []),
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
        "squeeze_norm": spec.get("squeeze_norm") or "n/a",
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
