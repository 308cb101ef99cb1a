# Analysis and figures: Eq. 4 quantities and activation sums per model (one job each), then
# the paper's Figures 1-9 and training curves per study, PNG (in the report) and PDF.
from smoothsqueeze.study import CAPTION_FORMATS, FIGURES, STAGE_VERSIONS, Plan, as_json

plan = Plan(config)


rule analyze:
    input:
        checkpoint=lambda w: plan.paths.checkpoint(w.study, w.model),
        data=lambda w: plan.dataset_file(w.study),
    output:
        npz=plan.paths.analysis("{study}", "{model}"),
        summary=plan.paths.analysis_summary("{study}", "{model}"),
    params:
        gpu_job_slots=lambda w: plan.gpu_job_slots(w.study),
        spec=lambda w: as_json(plan.analysis_spec(w.study, w.model)),
        version=STAGE_VERSIONS["analyze"],
    resources:
        gpu=lambda w: plan.gpu_slots(w.study),
    conda:
        "../../envs/torch.yaml"
    log:
        plan.paths.log("{study}", "analysis", "{model}"),
    shell:
        "SMOOTHSQUEEZE_GPU_JOB_SLOTS={params.gpu_job_slots} python -m smoothsqueeze analysis --spec {params.spec:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} --out {output.npz:q} --summary {output.summary:q} > {log:q} 2>&1"


rule figures:
    input:
        # Per model, in grid order: analysis files, metrics, records (measured PGD) and audits (AutoAttack),
        # whose numbers are printed beside each Eq. 4 prediction.
        unpack(lambda w: plan.figure_inputs(w.study)),
    output:
        **{
            f"{name}_{fmt}": (
                report(
                    plan.paths.figure("{study}", name, "png"),
                    caption=f"../report/figures/{name}.rst",
                    category="Figures",
                    subcategory="{study}",
                    labels={"study": "{study}", "figure": name, "paper": paper or "not in the paper"},
                )
                if fmt == "png"
                else plan.paths.figure("{study}", name, fmt)
            )
            for name, (paper, _what, _roles) in FIGURES.items()
            for fmt in ("png", "pdf")
        },
        # beside each figure, its caption (models chosen, numbers): plain text and LaTeX
        **{
            f"{name}_{fmt.replace('.', '_')}": plan.paths.figure("{study}", name, fmt)
            for name in FIGURES
            for fmt in CAPTION_FORMATS
        },
    params:
        spec=lambda w: as_json(plan.figures_spec(w.study)),
        selection=lambda w: plan.figure_selection(w.study),
        out_dir=lambda w: plan.paths.figures_dir(w.study),
        version=STAGE_VERSIONS["figures"],
    threads: 2  # the figures are drawn in parallel; the job runs last, when the cores are free
    conda:
        "../../envs/analysis.yaml"
    log:
        plan.paths.report_log("{study}", "figures"),
    shell:
        "python -m smoothsqueeze figures --spec {params.spec:q} --summaries {input.summaries:q} "
        "--analysis {input.analysis:q} --metrics {input.metrics:q} --records {input.records:q} "
        "--audits {input.audits:q} --out-dir {params.out_dir:q} --workers {threads} > {log:q} 2>&1"
