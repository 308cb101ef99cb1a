# Cost accounting: per-study table of compute seconds from every job's benchmark file, and the
# projection of a study's cost on this machine's device before it runs (an explicit target).
from smoothsqueeze.study import FORMAT_LABELS, STAGE_VERSIONS, TABLE_FORMATS, Plan, as_json, cost_model_args

plan = Plan(config)


rule cost_table:
    input:
        settings=lambda w: [plan.paths.settings(w.study, m) for m in plan.model_ids(w.study)],
        metrics=lambda w: [plan.paths.metrics(w.study, m) for m in plan.model_ids(w.study)],
        train_bench=lambda w: [plan.paths.benchmark(w.study, "train", m) for m in plan.model_ids(w.study)],
        eval_bench=lambda w: [plan.paths.benchmark(w.study, "evaluate", m) for m in plan.model_ids(w.study)],
    output:
        **{
            ext: report(
                plan.paths.table("{study}", "cost", ext),
                caption="../report/cost.rst",
                category="Cost",
                subcategory="{study}",
                labels={"study": "{study}", "table": "cost", "format": FORMAT_LABELS[ext]},
            )
            for ext in TABLE_FORMATS
        },
    params:
        models=lambda w, input: cost_model_args(input.settings, input.metrics, input.train_bench, input.eval_bench),
        version=STAGE_VERSIONS["cost_table"],
    conda:
        "../../envs/analysis.yaml"
    log:
        plan.paths.cost_log("{study}"),
    shell:
        "python -m smoothsqueeze cost --study {wildcards.study} {params.models:q} "
        "--csv {output.csv:q} --tex {output.tex:q} --html {output.html:q} > {log:q} 2>&1"


rule projection:
    # Not part of a study's targets: ask for the file (`snakemake reports/mnist/projection.csv`)
    # before launching a study, on a machine like the one that will run it.
    output:
        csv=plan.paths.projection("{study}", "csv"),
        txt=plan.paths.projection("{study}", "txt"),
    params:
        gpu_job_slots=lambda w: plan.gpu_job_slots(w.study),
        config=lambda w: as_json(config),
        steps=3,
        version=STAGE_VERSIONS["projection"],
    resources:
        gpu=lambda w: plan.gpu_slots(w.study),
    conda:
        "../../envs/torch.yaml"
    log:
        plan.paths.report_log("{study}", "projection"),
    shell:
        "SMOOTHSQUEEZE_GPU_JOB_SLOTS={params.gpu_job_slots} python -m smoothsqueeze project --study {wildcards.study} --config-json {params.config:q} "
        "--steps {params.steps} --out {output.csv:q} > {log:q} 2>&1"
