#!/usr/bin/env bash
# The CI torchvision stage: the tests in which real torchvision (third-party code) computes the
# torchvision/ variants, which the pinned torch 2.13.0 cannot run (its only torchvision wheel fails to
# import). Creates .venv-torch214 (or $EQUIV_TV_VENV) with torch 2.14.1 + torchvision 0.29.1 (and timm 1.0.31
# and transformers 5.24.0, the timm/ and hf/ variants' native builds) from
# constraints-torch214.txt and equiv's torch and test extras only: no TensorFlow, no Keras (a cold
# install is about 80 s here instead of 4 min, and triton, which `import torchvision` loads, never meets
# TensorFlow in one process: that segfaults). Idempotent: a second run only checks. Extra arguments go
# to pytest. EQUIV_REQUIRE_TORCHVISION=1 makes a torchvision that does not import an error here, never
# a fallback to the verbatim copy (tests/torchvision_layout.py). `--install-only` builds the venv and
# stops (.ci/run starts it in the background, beside the main suite: it is mostly unpacking wheels).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EQUIV_TV_VENV:-$root/.venv-torch214}"
stamp="$venv/.equiv-installed"
want="$(cat "$root/constraints-torch214.txt" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  echo "[equiv] installing torch 2.14.1 + torchvision 0.29.1 + timm 1.0.31 into $venv (first time: about 2 minutes)" >&2
  # --no-compile: no .pyc for the thousands of modules of torch and its CUDA packages that the tests
  # never import (Python compiles what is imported, on first import)
  "$venv/bin/python" -m pip install -q --no-compile --disable-pip-version-check \
    -c "$root/constraints-torch214.txt" -e "$root[torch,onnx,test]" torchvision==0.29.1 \
    timm==1.0.31 transformers==5.24.0 onnxscript 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  out="$("$venv/bin/python" -c "import equiv, torch, torchvision.models, timm, transformers, onnx, onnxruntime, onnxscript" 2>&1)" \
    || { echo "$out" >&2; echo "[equiv] torchvision install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
[ "${1:-}" = "--install-only" ] && exit 0
cd "$root"
export EQUIV_REQUIRE_TORCHVISION=1 EQUIV_HYPOTHESIS_PROFILE="${EQUIV_HYPOTHESIS_PROFILE:-ci}"
exec "$venv/bin/python" -m pytest -p no:cacheprovider \
  tests/test_torchvision.py \
  tests/frameworks/test_torch.py::test_reads_a_torchvision_state_dict \
  tests/test_testing.py::test_a_torchvision_module_runs_its_own_forward_against_equivs_build \
  tests/test_testing.py::test_a_module_that_does_not_fit_is_refused_with_what_is_needed \
  tests/test_seed.py::test_the_seed_torch_state_dict_loads_into_torchvision_resnet50 \
  "$@"
