# Cost accounting: per-study table of compute seconds from every job's benchmark file.
from smoothsqueeze.study import STAGE_VERSIONS, Plan, cost_model_args

plan = Plan(config)


rule cost_table:
    input:
        settings=lambda w: [plan.paths.settings(w.study, m) for m in plan.model_ids(w.study)],
        metrics=lambda w: [plan.paths.metrics(w.study, m) for m in plan.model_ids(w.study)],
        train_bench=lambda w: [plan.paths.benchmark(w.study, "train", m) for m in plan.model_ids(w.study)],
        eval_bench=lambda w: [plan.paths.benchmark(w.study, "evaluate", m) for m in plan.model_ids(w.study)],
    output:
        csv=report(plan.paths.table("{study}", "cost", "csv"), caption="../report/cost.rst", category="Cost"),
        tex=plan.paths.table("{study}", "cost", "tex"),
    params:
        models=lambda w, input: cost_model_args(input.settings, input.metrics, input.train_bench, input.eval_bench),
        version=STAGE_VERSIONS["cost_table"],
    conda:
        "../../envs/analysis.yaml"
    log:
        plan.paths.cost_log("{study}"),
    shell:
        "python -m smoothsqueeze cost --study {wildcards.study} {params.models:q} "
        "--csv {output.csv:q} --tex {output.tex:q} > {log:q} 2>&1"
