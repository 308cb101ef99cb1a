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
exec python -m pytest -q -rs --durations=20 "$@"
