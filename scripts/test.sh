#!/usr/bin/env bash
# The test command of the README and of CI: install if needed, then run the default suite
# (hypothesis profile "ci" unless EQUIV_HYPOTHESIS_PROFILE says otherwise). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/venv.sh"
cd "$root"
export EQUIV_HYPOTHESIS_PROFILE="${EQUIV_HYPOTHESIS_PROFILE:-ci}"
exec "${EQUIV_VENV:-$root/.venv}/bin/python" -m pytest "$@"
