# Training stage: one job per grid point. The resolved settings are a param, so changing a
# model's settings in config.yaml reruns that model only.
#
# Finished models are never lost or silently redone: model.pt is protected() (read-only; for
# users other than root Snakemake then refuses any rerun with ProtectedOutputException before it
# deletes anything), and the job itself keeps hard links of its outputs in <model dir>/.finished/:
# a rerun that finds them restores the model when its settings, data and code are unchanged and
# refuses (one line, nothing retrained) when they differ. To retrain a model, delete its folder.
# An interrupted job resumes from <model dir>/resume.pt (not an output, so Snakemake keeps it).


rule train:
    input:
        data=lambda w: dataset_file(w.study),
    output:
        checkpoint=protected(f"{RESULTS}/{{study}}/models/{{model}}/model.pt"),
        metrics=f"{RESULTS}/{{study}}/models/{{model}}/metrics.json",
        settings=f"{RESULTS}/{{study}}/models/{{model}}/settings.json",
    params:
        settings=train_settings,
        version=TRAIN_CODE_VERSION,
    resources:
        gpu=1,
    conda:
        TORCH_ENV
    log:
        f"{RESULTS}/{{study}}/logs/train/{{model}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/train/{{model}}.tsv"
    shell:
        "python -m smoothsqueeze train --spec {params.settings:q} --data {input.data:q} "
        "--checkpoint {output.checkpoint:q} --metrics {output.metrics:q} --settings-out {output.settings:q} > {log:q} 2>&1"
