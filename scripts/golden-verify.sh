#!/usr/bin/env bash
# `equiv golden verify` over every registered variant, split into one shard per core (two on CI):
# one verify runs on one core, so two shards finish in about half the time. Arguments go to each
# `equiv golden verify` (e.g. -q). Exit status: the largest of the shards' (1: a tap moved; 2: a
# missing or outdated file), each shard's report printed whole, in shard order.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EQUIV_VENV:-$root/.venv}"
shards="${EQUIV_GOLDEN_SHARDS:-$(nproc)}"
# Largest first, dealt round-robin, so the shards carry about the same number of parameters.
mapfile -t lines < <("$venv/bin/python" - "$shards" <<'PY'
import sys

import equiv
from equiv import canonical as C

n = int(sys.argv[1])
ordered = sorted(equiv.all_variants(), key=C.param_count, reverse=True)
for i in range(n):
    print(" ".join(v.name for v in ordered[i::n]))
PY
)
[ "${#lines[@]}" -gt 0 ] || { echo "golden-verify: could not list the registered variants" >&2; exit 2; }
# Each shard gets its share of the cores for the frameworks' thread pools (as the test suite's
# workers do): two shards of two threads each on two cores wait on each other.
share=$(( $(nproc) / shards )); [ "$share" -ge 1 ] || share=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$share}" TF_NUM_INTRAOP_THREADS="${TF_NUM_INTRAOP_THREADS:-$share}"
export TF_NUM_INTEROP_THREADS="${TF_NUM_INTEROP_THREADS:-$share}"
logs=() pids=()
for i in "${!lines[@]}"; do
    [ -n "${lines[$i]}" ] || continue
    logs[$i]="$(mktemp)"
    # shellcheck disable=SC2086  # variant names have no spaces
    "$venv/bin/equiv" golden verify "$@" ${lines[$i]} >"${logs[$i]}" 2>&1 &
    pids[$i]=$!
done
status=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; rc=$?
    cat "${logs[$i]}"; rm -f "${logs[$i]}"
    [ "$rc" -gt "$status" ] && status=$rc
done
exit "$status"
