# Data stage: one prepared .npz per dataset. Downloads run locally (compute nodes often have no internet).


localrules:
    prepare_data,


rule prepare_data:
    output:
        f"{DATA}/{{dataset}}.npz",
    params:
        data_root=f"--data-root {config['data_root']}" if config.get("data_root") else "",
        verify="" if config.get("verify_checksums", True) else "--no-verify",
        download_dir=lambda w: f"{DATA}/downloads/{w.dataset}",
        version=CODE_VERSION,
    conda:
        TORCH_ENV
    log:
        f"{DATA}/logs/prepare_{{dataset}}.log",
    shell:
        "python -m smoothsqueeze prepare-data {wildcards.dataset} --out {output} {params.data_root} "
        "--download-dir {params.download_dir} {params.verify} > {log} 2>&1"
