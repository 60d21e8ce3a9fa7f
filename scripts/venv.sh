#!/usr/bin/env bash
# Create .venv beside this repository and install equiv with everything it needs, pinned by
# constraints.txt (an unpinned torch would pull a CUDA build of several GB). Idempotent: a
# second run only checks. Needs python3 with pip and venv, nothing else.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EQUIV_VENV:-$root/.venv}"
stamp="$venv/.equiv-installed"
want="$(cat "$root/constraints.txt" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
echo "[equiv] installing into $venv (first time: a few minutes)" >&2
# onnxscript: for the tests only (torch.onnx.export's default exporter, dynamo=True, needs it; reading what it
# wrote does not), so it is in no extra: the tests that export with it skip, saying so, where it is missing
"$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" -e "$root[all,test]" \
  onnxscript 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
# TensorFlow logs its start-up on stderr: shown only when the import check fails
out="$("$venv/bin/python" -c "import equiv, tensorflow, keras, torch, tf_slim, safetensors, onnx, onnxruntime, onnxscript" 2>&1)" \
  || { echo "$out" >&2; echo "[equiv] install failed" >&2; exit 1; }
echo "$want" > "$stamp"
