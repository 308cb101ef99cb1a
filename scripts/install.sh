#!/usr/bin/env bash
# Install the pipeline into ./.venv (created when missing) with every package pinned by constraints.txt.
#   scripts/install.sh          # what the workflow needs
#   scripts/install.sh --test   # plus pytest, the Slurm executor plugin and torchattacks (test-time cross-check)
# Needs Python >= 3.11 as `python3` (override: PYTHON=/path/to/python3.12) and about 6 GB of disk (torch).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
case "${1:-}" in
    "") ;;
    --test) extras="[test]" ;;
    *) echo "scripts/install.sh: unknown option '$1' (only --test)" >&2; exit 2 ;;
esac
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "scripts/install.sh: $python is not Python >= 3.11 (set PYTHON=/path/to/python3.11 or newer)" >&2
    exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet 'pip==26.3'
python -m pip install --quiet -c constraints.txt -e ".${extras}"
if [ -n "$extras" ]; then
    # torchattacks without its stale pins (they would downgrade requests); only the tests use it.
    python -m pip install --quiet --no-deps -c constraints.txt 'torchattacks==3.5.1'
fi
