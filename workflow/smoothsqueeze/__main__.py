import sys

from .jobserver import run_remote

# A local Snakemake run starts a fork server that has torch imported already (smoothsqueeze.jobserver);
# without one, or for a stage it does not run, the stage runs in this process.
code = run_remote(sys.argv[1:])
if code is None:
    from .cli import main

    code = main()
sys.exit(code)
