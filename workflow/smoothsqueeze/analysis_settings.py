"""Settings of the analysis stage that the Snakefile reads at load time (kept free of torch)."""

DEFAULT_BATCH_SIZE = 200
#: Bump when what the analysis stage computes changes (the rule passes it, so Snakemake reruns the stage).
VERSION = "2"  # 2: Eq. 4 over every wrong class (eps_l_all ...), prediction by the nearest class
