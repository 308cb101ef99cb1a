# Data stage: one prepared .npz per dataset. Downloads run locally (compute nodes often have no internet).


localrules:
    prepare_data,


rule prepare_data:
    output:
        f"{DATA}/{{dataset}}.npz",
    params:
        # Option and value as a list: `{params.data_root:q}` quotes each word (a path may hold spaces).
        data_root=["--data-root", config["data_root"]] if config.get("data_root") else [],
        verify=[] if config.get("verify_checksums", True) else ["--no-verify"],
        download_dir=lambda w: f"{DATA}/downloads/{w.dataset}",
        version=CODE_VERSION,
    conda:
        TORCH_ENV
    log:
        f"{DATA}/logs/prepare_{{dataset}}.log",
    shell:
        "python -m smoothsqueeze prepare-data {wildcards.dataset} --out {output:q} {params.data_root:q} "
        "--download-dir {params.download_dir:q} {params.verify:q} > {log:q} 2>&1"
