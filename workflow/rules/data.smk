# Data stage: one prepared .npz per dataset. Downloads run locally (compute nodes often have no internet).
from smoothsqueeze.study import STAGE_VERSIONS, Plan

plan = Plan(config)


localrules:
    prepare_data,


rule prepare_data:
    output:
        plan.paths.dataset("{dataset}"),
    params:
        # Option and value as a list: `{params.data_root:q}` quotes each word (a path may hold spaces).
        data_root=["--data-root", config["data_root"]] if config.get("data_root") else [],
        verify=[] if config.get("verify_checksums", True) else ["--no-verify"],
        download_dir=lambda w: plan.paths.download_dir(w.dataset),
        version=STAGE_VERSIONS["prepare_data"],
    conda:
        "../../envs/torch.yaml"
    log:
        plan.paths.prepare_log("{dataset}"),
    shell:
        "python -m smoothsqueeze prepare-data {wildcards.dataset} --out {output:q} {params.data_root:q} "
        "--download-dir {params.download_dir:q} {params.verify:q} > {log:q} 2>&1"
