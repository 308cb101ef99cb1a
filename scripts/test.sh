#!/usr/bin/env bash
# Install with the test extras (scripts/install.sh --test) and run the test suite.
# Extra arguments go to pytest, e.g. the fast subset: `scripts/test.sh -m "not slow and not slurm"`.
# Set SMOOTHSQUEEZE_SLURM_TESTS=1 (as root, with apt-get) to run the Slurm tests too; CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
. .venv/bin/activate
echo "--- pip freeze (the environment the tests run in)"
python -m pip freeze
echo "---"
# Two workers (pytest-xdist), a test file per worker at a time (--dist loadfile: a file's module fixtures
# are built once; the Slurm tests, all in one file, never run twice at once). Most tests wait on one
# subprocess (Snakemake, a script), so on 2 cores two files at a time take about 20% less wall clock
# (README "Tests"). `scripts/test.sh -n 0` runs them one at a time.
exec python -m pytest -q -rs --durations=20 -n 2 --dist loadfile "$@"
