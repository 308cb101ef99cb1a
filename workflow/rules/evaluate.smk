# Attack stages: black-box sets crafted once per study and attack on the source model,
# then one evaluation job per model (clean, white-box, every black-box set of its study).


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
            },
        }
    )


def record_file(study, model):
    return f"{RESULTS}/{study}/records/{model}.json"


def evaluate_targets(study):
    return [record_file(study, m) for m in model_ids(study)]


STUDY_TARGETS.append(evaluate_targets)


rule craft_blackbox:
    input:
        source=lambda w: checkpoint_file(w.study, study_cfg(w.study)["blackbox"]["source"]),
        data=lambda w: dataset_file(w.study),
    output:
        f"{RESULTS}/{{study}}/blackbox/{{attack}}.npz",
    params:
        spec=blackbox_spec,
        version=CODE_VERSION,
    resources:
        gpu=1,
    log:
        f"{RESULTS}/{{study}}/logs/blackbox/{{attack}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/blackbox/{{attack}}.tsv"
    shell:
        "{PYTHON} -m smoothsqueeze craft-blackbox --spec {params.spec:q} --source {input.source} "
        "--data {input.data} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        checkpoint=lambda w: checkpoint_file(w.study, w.model),
        data=lambda w: dataset_file(w.study),
        blackbox=lambda w: [blackbox_file(w.study, n) for n in blackbox_names(w.study)],
    output:
        f"{RESULTS}/{{study}}/records/{{model}}.json",
    params:
        spec=evaluate_spec,
        sets=lambda w, input: " ".join(f"{n}={input.blackbox[i]}" for i, n in enumerate(blackbox_names(w.study))),
        version=CODE_VERSION,
    resources:
        gpu=1,
    log:
        f"{RESULTS}/{{study}}/logs/evaluate/{{model}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/evaluate/{{model}}.tsv"
    shell:
        "{PYTHON} -m smoothsqueeze evaluate --spec {params.spec:q} --checkpoint {input.checkpoint} "
        "--data {input.data} --blackbox {params.sets} --out {output} > {log} 2>&1"
