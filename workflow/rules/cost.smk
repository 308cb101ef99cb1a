# Cost accounting: per-study table of compute seconds from every job's benchmark file.


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
    conda:
        ANALYSIS_ENV
    log:
        f"{RESULTS}/{{study}}/logs/cost.log",
    shell:
        "python -m smoothsqueeze cost --study {wildcards.study} {params.models:q} "
        "--csv {output.csv:q} --tex {output.tex:q} > {log:q} 2>&1"
