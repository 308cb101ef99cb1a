# Attack stages: black-box sets crafted once per study and attack on the source model,
# then one evaluation job per model (clean, white-box, every black-box set of its study).


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
    conda:
        TORCH_ENV
    log:
        f"{RESULTS}/{{study}}/logs/blackbox/{{attack}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/blackbox/{{attack}}.tsv"
    shell:
        "python -m smoothsqueeze craft-blackbox --spec {params.spec:q} --source {input.source:q} "
        "--data {input.data:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        checkpoint=lambda w: checkpoint_file(w.study, w.model),
        data=lambda w: dataset_file(w.study),
        blackbox=lambda w: [blackbox_file(w.study, n) for n in blackbox_names(w.study)],
    output:
        f"{RESULTS}/{{study}}/records/{{model}}.json",
    params:
        spec=evaluate_spec,
        # One NAME=PATH word per set, each quoted by `{params.sets:q}`.
        sets=lambda w, input: [f"{n}={input.blackbox[i]}" for i, n in enumerate(blackbox_names(w.study))],
        version=CODE_VERSION,
    resources:
        gpu=1,
    conda:
        TORCH_ENV
    log:
        f"{RESULTS}/{{study}}/logs/evaluate/{{model}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/evaluate/{{model}}.tsv"
    shell:
        "python -m smoothsqueeze evaluate --spec {params.spec:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} --blackbox {params.sets:q} --out {output:q} > {log:q} 2>&1"
