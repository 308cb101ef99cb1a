# HTML report: reports/<study>/report.html is a final file of every study, so the default target
# ends in it. The job runs `snakemake --report` on the study's other final files, which exist by
# then with their jobs' metadata. It hands this run's whole config (--configfile and --config
# overrides included) to that call as one JSON file, kept next to the log as a record, and writes the
# report's first screen (the claims ledger's verdicts, logs/report_landing.html) from claims.csv.
from pathlib import Path

from smoothsqueeze.study import Plan, as_json

plan = Plan(config)


localrules:
    html_report,


rule html_report:
    input:
        lambda w: plan.report_inputs(w.study),
    output:
        plan.paths.report("{study}"),
    params:
        config_file=lambda w: plan.paths.report_config(w.study),
        snakefile=workflow.main_snakefile,
        partial=lambda w: plan.paths.report_partial(w.study),
        landing=lambda w: plan.paths.report_landing(w.study),
        ledger=lambda w: plan.paths.claims(w.study, "csv"),
    log:
        plan.paths.report_log("{study}", "report"),
    run:
        Path(params.config_file).write_text(as_json(config) + "\n")
        from smoothsqueeze.claims.render import write_landing  # here, not at the top: parsing the Snakefile stays free of pandas

        write_landing(params.ledger, wildcards.study, params.landing)  # the first screen: workflow/report/workflow.rst embeds it
        shell(
            "python -m snakemake --snakefile {params.snakefile:q} --directory . --configfile {params.config_file:q} "
            "--cores 1 --nolock --report {params.partial:q} {input:q} > {log:q} 2>&1 && mv {params.partial:q} {output:q}"
        )
