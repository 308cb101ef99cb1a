# Training stage: one job per grid point. The resolved settings are a param, so changing a
# model's settings in config.yaml reruns that model only.
#
# Finished models are never lost or silently redone: model.pt is protected() (read-only; for
# users other than root Snakemake then refuses any rerun with ProtectedOutputException before it
# deletes anything), and the job itself keeps hard links of its outputs in <model dir>/.finished/:
# a rerun that finds them restores the model when its settings, data and code are unchanged and
# refuses (one line, nothing retrained) when they differ. To retrain a model, delete its folder.
# An interrupted job resumes from <model dir>/resume.pt (not an output, so Snakemake keeps it).
from smoothsqueeze.study import STAGE_VERSIONS, Plan, as_json

plan = Plan(config)


rule train:
    input:
        data=lambda w: plan.dataset_file(w.study),
    output:
        checkpoint=protected(plan.paths.checkpoint("{study}", "{model}")),
        metrics=plan.paths.metrics("{study}", "{model}"),
        settings=plan.paths.settings("{study}", "{model}"),
    params:
        gpu_job_slots=lambda w: plan.gpu_job_slots(w.study),
        settings=lambda w: as_json(plan.train_spec(w.study, w.model)),
        version=STAGE_VERSIONS["train"],
    priority: lambda w: plan.train_priority(w.study, w.model)
    resources:
        gpu=lambda w: plan.gpu_slots(w.study),
    conda:
        "../../envs/torch.yaml"
    log:
        plan.paths.log("{study}", "train", "{model}"),
    benchmark:
        plan.paths.benchmark("{study}", "train", "{model}")
    shell:
        "SMOOTHSQUEEZE_GPU_JOB_SLOTS={params.gpu_job_slots} python -m smoothsqueeze train --spec {params.settings:q} --data {input.data:q} "
        "--checkpoint {output.checkpoint:q} --metrics {output.metrics:q} --settings-out {output.settings:q} > {log:q} 2>&1"
