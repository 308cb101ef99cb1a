# Attack stages: black-box sets crafted once per study and attack on the source model,
# then one evaluation job per model (clean, white-box, every black-box set of its study).
from smoothsqueeze.study import STAGE_VERSIONS, Plan, as_json

plan = Plan(config)


rule craft_blackbox:
    input:
        source=lambda w: plan.blackbox_source_checkpoint(w.study),
        data=lambda w: plan.dataset_file(w.study),
    output:
        plan.paths.blackbox("{study}", "{attack}"),
    params:
        gpu_job_slots=lambda w: plan.gpu_job_slots(w.study),
        spec=lambda w: as_json(plan.blackbox_spec(w.study, w.attack)),
        version=STAGE_VERSIONS["craft_blackbox"],
    resources:
        gpu=lambda w: plan.gpu_slots(w.study),
    conda:
        "../../envs/torch.yaml"
    log:
        plan.paths.log("{study}", "blackbox", "{attack}"),
    benchmark:
        plan.paths.benchmark("{study}", "blackbox", "{attack}")
    shell:
        "SMOOTHSQUEEZE_GPU_JOB_SLOTS={params.gpu_job_slots} python -m smoothsqueeze craft-blackbox --spec {params.spec:q} --source {input.source:q} "
        "--data {input.data:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        checkpoint=lambda w: plan.paths.checkpoint(w.study, w.model),
        # The training's robust check (train.robust_check): a model that overfitted catastrophically is marked in its record.
        metrics=lambda w: plan.paths.metrics(w.study, w.model),
        data=lambda w: plan.dataset_file(w.study),
        blackbox=lambda w: [plan.paths.blackbox(w.study, n) for n in plan.blackbox_names(w.study)],
    output:
        plan.paths.record("{study}", "{model}"),
    params:
        gpu_job_slots=lambda w: plan.gpu_job_slots(w.study),
        spec=lambda w: as_json(plan.evaluate_spec(w.study, w.model)),
        # One NAME=PATH word per set, each quoted by `{params.sets:q}`.
        sets=lambda w, input: [f"{n}={input.blackbox[i]}" for i, n in enumerate(plan.blackbox_names(w.study))],
        version=STAGE_VERSIONS["evaluate"],
    resources:
        gpu=lambda w: plan.gpu_slots(w.study),
    conda:
        "../../envs/torch.yaml"
    log:
        plan.paths.log("{study}", "evaluate", "{model}"),
    benchmark:
        plan.paths.benchmark("{study}", "evaluate", "{model}")
    shell:
        "SMOOTHSQUEEZE_GPU_JOB_SLOTS={params.gpu_job_slots} python -m smoothsqueeze evaluate --spec {params.spec:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} --metrics {input.metrics:q} --blackbox {params.sets:q} --out {output:q} > {log:q} 2>&1"
