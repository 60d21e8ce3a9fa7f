#!/usr/bin/env bash
# Run the equiv command line from this checkout, installing it first if needed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/venv.sh"
exec "${EQUIV_VENV:-$root/.venv}/bin/equiv" "$@"
