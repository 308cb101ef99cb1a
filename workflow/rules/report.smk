# HTML report: reports/<study>/report.html is a final file of every study, so the default target
# ends in it. The job runs `snakemake --report` on the study's other final files, which exist by
# then with their jobs' metadata. It hands this run's whole config (--configfile and --config
# overrides included) to that call as one JSON file, kept next to the log as a record.


localrules:
    html_report,


rule html_report:
    input:
        report_inputs,
    output:
        f"{REPORTS}/{{study}}/report.html",
    params:
        config_file=lambda w: f"{REPORTS}/{w.study}/logs/report_config.json",
        snakefile=workflow.main_snakefile,
        partial=lambda w: f"{REPORTS}/{w.study}/.report.partial.html",
    log:
        f"{REPORTS}/{{study}}/logs/report.log",
    run:
        Path(params.config_file).write_text(as_json(config) + "\n")
        shell(
            "python -m snakemake --snakefile {params.snakefile:q} --directory . --configfile {params.config_file:q} "
            "--cores 1 --nolock --report {params.partial:q} {input:q} > {log:q} 2>&1 && mv {params.partial:q} {output:q}"
        )
