#!/usr/bin/env bash
# Install (scripts/install.sh) and build the offline digits demo: 9 models trained, attacked and
# audited on 2 CPU cores, then tables, figures and the HTML report under reports/digits/.
# Extra arguments go to snakemake (e.g. `scripts/demo.sh --cores 4`, or a study name: `scripts/demo.sh fashion`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
. .venv/bin/activate
exec snakemake --cores 2 "$@"
