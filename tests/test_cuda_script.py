"""benchmarks/cuda/run.py, the GPU benchmark in one go, runs here as a dry run before it meets a GPU:
on the CPU, small, TensorFlow and Keras hidden as on the GPU machine, nothing installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_dry_run_writes_every_run_and_says_why_cuda_paths_are_skipped(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/cuda/run.py"), str(out), "--device", "cpu",
                        "--dry-run"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "bench.json").read_text())
    assert doc["dry_run"] and doc["device"] == "cpu" and doc["batches"] == [1, 2]
    runs = {run["name"]: run for run in doc["runs"]}
    assert set(runs) == {"torch-float32", "torch-bfloat16", "onnx-float32"}
    for run in runs.values():
        res = run["result"]
        fws = {row["framework"] for row in res["rows"]}
        assert fws == set(run["frameworks"])  # the run's backends, timed
        assert {row["batch"] for row in res["rows"]} == {1, 2}
        # TensorFlow hidden, as on the GPU machine; ONNX Runtime's product is float32 only
        assert set(res["ceilings_gflops"]) == ({"torch", "onnx"} if run["dtype"] == "float32" else {"torch"})
        assert res["settings"]["load_average"]["before"]
    assert "CUDA" in runs["torch-float32"]["result"]["skipped"]["torch:tf32"]
    assert "CUDA path" in runs["onnx-float32"]["result"]["skipped"]["onnx:fp16"]
    assert {row["path"] for row in runs["torch-float32"]["result"]["rows"]} == {"plain", "channels_last"}
    assert "dry run" in runs["torch-float32"]["left_out"]["compile"]  # said, not silently dropped
    assert {row["path"] for row in runs["onnx-float32"]["result"]["rows"]} == {"plain"}
    md = (out / "bench.md").read_text()
    assert doc["variant"] == "torchvision/resnet18"  # the dry run's; the real run's is torchvision/resnet50
    assert md.startswith("# equiv bench `torchvision/resnet18` on cpu") and "DRY RUN" in md
    assert md.count("| torch | plain") == 4 and md.count("| onnx | plain") == 2  # two dtypes x two batches; two
