# Helpers of the evaluate rules (workflow/rules/evaluate.smk): paths, job settings, study targets.
def blackbox_file(study, attack):
    return f"{RESULTS}/{study}/blackbox/{attack}.npz"


def blackbox_names(study):
    return [a["name"] for a in study_cfg(study)["blackbox"]["attacks"]]


def blackbox_spec(wildcards):
    st = study_cfg(wildcards.study)
    attacks = {a["name"]: a for a in resolved_attacks(wildcards.study, st["blackbox"]["attacks"])}
    return as_json(
        {
            "attack": attacks[wildcards.attack],
            "batch_size": st["attack"]["batch_size"],
            "max_examples": st["attack"].get("max_examples"),
            "seed": st["seed"],
            "architecture": st["architecture"],
        }
    )


def evaluate_spec(wildcards):
    st = study_cfg(wildcards.study)
    settings = sscfg.resolve_model(config, wildcards.study, wildcards.model)
    return as_json(
        {
            "whitebox": resolved_attacks(wildcards.study, st["attack"]["whitebox"]),
            "batch_size": st["attack"]["batch_size"],
            "max_examples": st["attack"].get("max_examples"),
            "seed": st["seed"],
            "architecture": st["architecture"],
            "info": {
                "study": wildcards.study,
                "model_id": wildcards.model,
                "dataset": st["dataset"],
                "architecture": st["architecture"],
                "entry": settings["config_entry"],
                "pixel_units": settings["pixel_units"],
                "eps": st["attack"]["eps"],
                "blackbox_source": st["blackbox"]["source"],
                "squeeze_norm": settings["train"].get("squeeze_norm"),
            },
        }
    )


def record_file(study, model):
    return f"{RESULTS}/{study}/records/{model}.json"


def evaluate_targets(study):
    return [record_file(study, m) for m in model_ids(study)]


STUDY_TARGETS.append(evaluate_targets)
