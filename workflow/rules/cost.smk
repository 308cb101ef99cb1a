# Cost accounting: per-study table of compute seconds from every job's benchmark file.


def cost_targets(study):
    return [f"{REPORTS}/{study}/tables/cost.csv", f"{REPORTS}/{study}/tables/cost.tex"]


def cost_model_args(wildcards, input):
    groups = zip(input.settings, input.metrics, input.train_bench, input.eval_bench)
    return " ".join("--model " + " ".join(group) for group in groups)


STUDY_TARGETS.append(cost_targets)


rule cost_table:
    input:
        settings=lambda w: [f"{model_dir(w.study, m)}/settings.json" for m in model_ids(w.study)],
        metrics=lambda w: [f"{model_dir(w.study, m)}/metrics.json" for m in model_ids(w.study)],
        train_bench=lambda w: [f"{RESULTS}/{w.study}/benchmarks/train/{m}.tsv" for m in model_ids(w.study)],
        eval_bench=lambda w: [f"{RESULTS}/{w.study}/benchmarks/evaluate/{m}.tsv" for m in model_ids(w.study)],
    output:
        csv=report(f"{REPORTS}/{{study}}/tables/cost.csv", caption="../report/cost.rst", category="Cost"),
        tex=f"{REPORTS}/{{study}}/tables/cost.tex",
    params:
        models=cost_model_args,
        version=CODE_VERSION,
    log:
        f"{RESULTS}/{{study}}/logs/cost.log",
    shell:
        "{PYTHON} -m smoothsqueeze.cost --study {wildcards.study} {params.models} "
        "--csv {output.csv} --tex {output.tex} > {log} 2>&1"
