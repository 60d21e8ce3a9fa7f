#!/usr/bin/env bash
# The GPU benchmark in one go (benchmarks/cuda/run.py says what it runs and installs):
#   bash benchmarks/cuda/run.sh OUT_DIR                         on the GPU machine
#   bash benchmarks/cuda/run.sh OUT_DIR --device cpu --dry-run  here
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "${PYTHON:-python3}" "$here/run.py" "$@"
