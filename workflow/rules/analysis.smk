# Analysis and figures: Eq. 4 quantities and activation sums per model (one job each), then
# the paper's Figures 1-9 and training curves per study, PNG (in the report) and PDF.


rule analyze:
    input:
        checkpoint=lambda w: checkpoint_file(w.study, w.model),
        data=lambda w: dataset_file(w.study),
    output:
        npz=f"{RESULTS}/{{study}}/analysis/{{model}}.npz",
        summary=f"{RESULTS}/{{study}}/analysis/{{model}}.json",
    params:
        spec=analysis_spec,
        version=f"{CODE_VERSION}-{ssan.VERSION}",
    resources:
        gpu=1,
    conda:
        TORCH_ENV
    log:
        f"{RESULTS}/{{study}}/logs/analysis/{{model}}.log",
    shell:
        "python -m smoothsqueeze analysis --spec {params.spec:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} --out {output.npz:q} --summary {output.summary:q} > {log:q} 2>&1"


rule figures:
    input:
        analysis=lambda w: [analysis_file(w.study, m) for m in model_ids(w.study)],
        summaries=lambda w: [analysis_summary_file(w.study, m) for m in model_ids(w.study)],
        metrics=lambda w: [f"{model_dir(w.study, m)}/metrics.json" for m in model_ids(w.study)],
    output:
        **figure_outputs(),
    params:
        spec=figures_spec,
        selection=figure_selection,
        out_dir=lambda w: f"{REPORTS}/{w.study}/figures",
        version=f"{CODE_VERSION}-{ssfig.VERSION}",
    conda:
        ANALYSIS_ENV
    log:
        f"{REPORTS}/{{study}}/logs/figures.log",
    shell:
        "python -m smoothsqueeze figures --spec {params.spec:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
