#!/usr/bin/env bash
# One GPU check, at most 8 minutes on one GPU: step times and % of the bf16 matmul peak (MNIST CNN
# in 1, 2, 4 processes sharing the card through gpu_claim slots; the wide ResNet), PGD throughput,
# a few hundred real training steps at 28x28 (Fashion-MNIST when installed), the projected
# device-hours of the mnist and cifar10 studies, and the training fast paths that are off by default
# until measured on a GPU (train.compile_mode, compile_loss, adversarial_amp: gpu_fast_paths.py), each
# against eager. Prints everything and writes <out>/gpu_check.json (after every part).
#
#   benchmarks/gpu_check.sh                  # on the GPU (or the CPU when there is none), out: gpu_check-out/
#   benchmarks/gpu_check.sh --fast-paths-only  # the matmul peak and the fast paths only
#   benchmarks/gpu_check.sh --quick          # tiny counts on the CPU, about a minute, no compiling (the test suite runs it)
#   benchmarks/gpu_check.sh --quick --compile  # ... with the compiled variants (tens of seconds each on a CPU)
#   benchmarks/gpu_check.sh --out DIR        # other arguments go to benchmarks/gpu_check.py (see --help)
#
# Python: $PYTHON, else the checkout's .venv, else python3. The whole check is stopped after
# $GPU_CHECK_TIMEOUT seconds (default 480).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python="python3"; fi
fi
export PYTHONPATH="$root/workflow${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=TERM --kill-after=20 "${GPU_CHECK_TIMEOUT:-480}" "$python" "$here/gpu_check.py" "$@"
