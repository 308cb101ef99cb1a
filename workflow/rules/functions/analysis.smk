# Helpers of the analysis rules (workflow/rules/analysis.smk): paths, job settings, study targets.
from smoothsqueeze import analysis_settings as ssan
from smoothsqueeze import figures as ssfig


def analysis_file(study, model):
    return f"{RESULTS}/{study}/analysis/{model}.npz"


def analysis_summary_file(study, model):
    return f"{RESULTS}/{study}/analysis/{model}.json"


def figure_file(study, name, fmt):
    return f"{REPORTS}/{study}/figures/{name}.{fmt}"


def analysis_spec(wildcards):
    st = study_cfg(wildcards.study)
    settings = sscfg.resolve_model(config, wildcards.study, wildcards.model)
    return as_json(
        {
            "eps": st["attack"]["eps"],
            "pixel_units": st.get("pixel_units", 1),
            "batch_size": st.get("analysis", {}).get("batch_size", ssan.DEFAULT_BATCH_SIZE),
            "max_examples": st.get("analysis", {}).get("max_examples", st["attack"].get("max_examples")),
            "architecture": st["architecture"],
            "info": {
                "study": wildcards.study,
                "model_id": wildcards.model,
                "dataset": st["dataset"],
                "architecture": st["architecture"],
                "entry": settings["config_entry"],
            },
        }
    )


def grid_entries(study):
    return {m: sscfg.grid_entry(config, study, m) for m in model_ids(study)}


def figures_spec(wildcards):
    st = study_cfg(wildcards.study)
    models = [
        {
            "model_id": m,
            "entry": entry,
            "analysis": analysis_file(wildcards.study, m),
            "summary": analysis_summary_file(wildcards.study, m),
            "metrics": f"{model_dir(wildcards.study, m)}/metrics.json",
        }
        for m, entry in grid_entries(wildcards.study).items()
    ]
    return as_json({"study": wildcards.study, "eps": st["attack"]["eps"], "pixel_units": st.get("pixel_units", 1), "models": models})


def figure_selection(wildcards):
    """Per figure the models shown, the same with their parameters, and the roles missing, as text for the report captions."""
    entries, units = grid_entries(wildcards.study), study_cfg(wildcards.study).get("pixel_units", 1)
    chosen, shown = ssfig.select(entries, units), ssfig.shown(entries, units)
    return {
        name: {
            "models": ", ".join(sel["models"]) or "none",
            "shown": "; ".join(shown[name]) or "none",
            "missing": "; ".join(sel["missing"]) or "none",
        }
        for name, sel in chosen.items()
    }


def figure_outputs():
    out = {}
    for name, (paper, _what, _roles) in ssfig.FIGURES.items():
        out[f"{name}_png"] = report(
            figure_file("{study}", name, "png"),
            caption=f"../report/figures/{name}.rst",
            category="Figures",
            subcategory="{study}",
            labels={"study": "{study}", "figure": name, "paper": paper or "not in the paper"},
        )
        out[f"{name}_pdf"] = figure_file("{study}", name, "pdf")
    return out


def figure_targets(study):
    return [figure_file(study, name, fmt) for name in ssfig.FIGURES for fmt in ssfig.FORMATS]


def analysis_targets(study):
    return [f(study, m) for m in model_ids(study) for f in (analysis_file, analysis_summary_file)]


STUDY_TARGETS.append(analysis_targets)
STUDY_TARGETS.append(figure_targets)
