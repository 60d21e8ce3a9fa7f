"""The GPU benchmark in one go: `equiv bench` of torchvision/resnet50 on CUDA, PyTorch and ONNX Runtime.

    python benchmarks/cuda/run.py OUT_DIR                       # on the GPU machine
    python benchmarks/cuda/run.py OUT_DIR --device cpu --dry-run  # here, before it meets a GPU

The GPU machine has PyTorch with CUDA, onnxruntime and JAX, but no TensorFlow or Keras. This script
1. checks what equiv's bench needs there and installs what is missing with pip (never torch, whose CUDA
   build is the machine's own): numpy, rich, threadpoolctl, onnx, and onnxruntime-gpu where the installed
   onnxruntime has no CUDA execution provider (pins from constraints.txt where it has them);
2. runs equiv.bench.bench on torchvision/resnet50 at batch 1, 32 and 256 (224x224):
   - torch float32: plain, TF32, channels_last, torch.compile (each path's logits checked against plain);
   - torch bfloat16 (autocast): plain and channels_last;
   - onnx float32: plain (ORT's CUDA EP, TF32 off), TF32, a float16 graph;
   each with the machine's ceilings (each backend's 4096x4096 matrix product) and the load average
   before and after;
3. writes OUT_DIR/bench.json (every row of every run, the ceilings, versions, load) and OUT_DIR/bench.md.

--dry-run (with --device cpu) runs the same code here, small: torchvision/resnet18 (--variant to change it)
at batch 1 and 2 at 32x32, one repeat, a
256x256 ceiling, TensorFlow and Keras hidden (as on the GPU machine), nothing installed (what would be
is listed), torch.compile left out (minutes of inductor compilation on the CPU; the real run tries it).
Paths that need CUDA are reported skipped with the reason, as on any CPU. Exit 0 when every run wrote
its rows, 2 on a usage error or a failed install.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANT = "torchvision/resnet50"
DRY_VARIANT = "torchvision/resnet18"  # the same code, a quarter of the weights to seed
HIDDEN = ("tensorflow", "keras", "tf_keras", "tf_slim")  # absent on the GPU machine

# name, frameworks, dtype, paths (of the backends' FAST_PATHS), what it shows
RUNS = [
    ("torch-float32", ("torch",), "float32", ("tf32", "channels_last", "compile"),
     "PyTorch fp32: plain, TF32, channels_last, torch.compile"),
    ("torch-bfloat16", ("torch",), "bfloat16", ("channels_last",), "PyTorch bf16 autocast: plain, channels_last"),
    ("onnx-float32", ("onnx",), "float32", ("tf32", "fp16"),
     "ONNX Runtime CUDA EP: fp32 (TF32 off), TF32, a float16 graph"),
]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[name.lower()] = version
    return pins


def missing(device: str) -> list[str]:
    """pip requirements for what equiv's bench needs here and does not find (torch is never installed)."""
    pins, want = _pins(), []

    def pinned(name: str) -> str:
        return f"{name}=={pins[name]}" if name in pins else name

    for module, dist in (("numpy", "numpy"), ("rich", "rich"), ("threadpoolctl", "threadpoolctl"), ("onnx", "onnx")):
        if importlib.util.find_spec(module) is None:
            want.append(pinned(dist))
    if importlib.util.find_spec("onnxruntime") is None:
        want.append("onnxruntime-gpu" if device == "cuda" else pinned("onnxruntime"))
    elif device == "cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            want.append("onnxruntime-gpu")  # its CUDA build (the same module name)
    return want


def install(reqs: list[str]) -> None:
    if any(r.startswith("onnxruntime-gpu") for r in reqs):  # the CPU wheel would shadow the GPU one
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "onnxruntime"], check=False)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *reqs], check=True)


def hide(modules=HIDDEN) -> None:
    """Make `modules` fail to import in this process, as on a machine without them."""
    for m in modules:
        sys.modules[m] = None  # type: ignore[assignment]


def summary_md(doc: dict) -> str:
    lines = [f"# equiv bench `{doc['variant']}` on {doc['device']} ({doc['device_name'] or 'no accelerator'})", "",
             f"`{doc['command']}`", "",
             f"{'DRY RUN (small settings; figures mean nothing). ' if doc['dry_run'] else ''}"
             f"Input {doc['input_size'][0]}x{doc['input_size'][1]}, batches {', '.join(map(str, doc['batches']))}, "
             f"{doc['repeats']} timed repeats (median). Host {doc['host']}.", ""]
    for run in doc["runs"]:
        lines += [f"## {run['name']}: {run['what']}", ""]
        if "error" in run:
            lines += [f"FAILED: {run['error']}", ""]
            continue
        r = run["result"]
        lines += ["| framework | path | batch | images/s | GFLOP/s | of own matmul | of machine ceiling "
                  "| logits vs plain |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for row in r["rows"]:
            lines.append(f"| {row['framework']} | {row['path']}{' **best**' if row['best'] else ''} | {row['batch']} | "
                         f"{row['images_per_s']:.1f} | {row['gflops']:.0f} | {row['of_framework_ceiling']:.0%} | "
                         f"{row['of_machine_ceiling']:.0%} | {row['rel_error']:.1e}"
                         f"{'' if row['used'] else ' (not used: beyond the float32 tolerance)'} |")
        load = r["settings"].get("load_average") or {}
        lines += ["", "Ceilings (GFLOP/s, " + f"{r['settings']['matmul_n']}x{r['settings']['matmul_n']} product): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in r["ceilings_gflops"].items())
                  + f"; load average before {load.get('before')}, after {load.get('after')} "
                  f"on {load.get('cpus')} CPUs."]
        lines += [f"Skipped {k}: {why}" for k, why in r["skipped"].items()]
        lines += [f"Left out {k}: {why}" for k, why in run.get("left_out", {}).items()]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for bench.json and bench.md (made if missing)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dry-run", action="store_true", help="small settings, nothing installed (see above)")
    ap.add_argument("--variant", default=None, help=f"default {VARIANT} ({DRY_VARIANT} with --dry-run)")
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-install", action="store_true", help="list what is missing instead of installing it")
    a = ap.parse_args(argv)
    if a.out.exists() and not a.out.is_dir():
        print(f"run.py: error: {a.out} is not a folder", file=sys.stderr)
        return 2
    dry = a.dry_run
    variant = a.variant or (DRY_VARIANT if dry else VARIANT)
    batches = a.batches or ([1, 2] if dry else [1, 32, 256])
    repeats = a.repeats or (1 if dry else 10)
    size = (32, 32) if dry else (224, 224)
    reqs = missing(a.device)
    if reqs:
        if dry or a.no_install:
            print(f"[cuda-bench] would install: {' '.join(reqs)}", file=sys.stderr)
        else:
            print(f"[cuda-bench] installing: {' '.join(reqs)}", file=sys.stderr)
            try:
                install(reqs)
            except subprocess.CalledProcessError as e:
                print(f"run.py: error: pip install {' '.join(reqs)} failed ({e.returncode})", file=sys.stderr)
                return 2
            importlib.invalidate_caches()
    if dry:
        hide()
    sys.path.insert(0, str(ROOT))
    from equiv.bench import bench
    from equiv.frameworks import adapter

    try:
        device_name = adapter("torch").device_name(a.device)
    except Exception:  # noqa: BLE001 - torch unusable: each run says why
        device_name = None
    doc = {"variant": variant, "device": a.device, "device_name": device_name, "dry_run": dry,
           "command": "python benchmarks/cuda/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "batches": batches, "input_size": list(size), "repeats": repeats,
           "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    failed = False
    for name, fws, dtype, paths, what in RUNS:
        left_out = [p for p in paths if dry and p == "compile"]
        paths = tuple(p for p in paths if p not in left_out)
        print(f"[cuda-bench] {name}: {what}", file=sys.stderr)
        run = {"name": name, "what": what, "frameworks": list(fws), "dtype": dtype, "paths": list(paths),
               "left_out": {p: "dry run: minutes of inductor compilation on the CPU; the real run tries it"
                            for p in left_out}}
        try:
            r = bench(variant, fws, batches=batches, input_size=size, device=a.device, dtype=dtype, paths=paths,
                      repeats=repeats, matmul_n=256 if dry else 4096,
                      progress=lambda m: print(f"[cuda-bench]   {m}", file=sys.stderr))
            run["result"] = r.to_json()
        except Exception as e:  # noqa: BLE001 - one run failing does not lose the others
            run["error"] = f"{type(e).__name__}: {e}"
            failed = True
        doc["runs"].append(run)
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    a.out.mkdir(parents=True, exist_ok=True)
    for fname, text in (("bench.json", json.dumps(doc, indent=1) + "\n"), ("bench.md", summary_md(doc))):
        tmp = a.out / f".{fname}.tmp"
        tmp.write_text(text)
        os.replace(tmp, a.out / fname)
    print(f"[cuda-bench] wrote {a.out / 'bench.json'} and {a.out / 'bench.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
