"""Settings of the analysis stage that the Snakefile reads at load time (kept free of torch)."""

DEFAULT_BATCH_SIZE = 200
#: Bump when what the analysis stage computes changes (the rule passes it, so Snakemake reruns the stage).
VERSION = "1"
