"""Porting a slim checkpoint (slim/resnet_v2_152 by default) to safetensors or a torch
state_dict, against the bare work.

The bare work is what any port must do at least: read every tensor with
`tf.train.load_checkpoint` and write them all with safetensors (or torch.save). Both run in fresh
processes, alternating, several rounds; each reports the time of the work alone (imports excluded)
and its peak memory above the process's own baseline once TensorFlow, safetensors and torch are
imported (Linux: the peak-RSS mark is reset through /proc/self/clear_refs just before the work).
Before each run the page cache is synced (os.sync), so that neither run pays for the writeback of
what the other wrote: equiv's port fsyncs its file before publishing it (equiv.atomic), the bare
writer does not, and its 550 MB were otherwise written back while the next equiv run worked.

    python benchmarks/port_slim_to_safetensors.py [--variant slim/vgg_16] [--to torch] [--rounds 5]
        [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import json, sys, time, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf
from safetensors.numpy import save_file
import torch
mode, ckpt, out, variant = sys.argv[1:5]
if mode == "equiv":  # imports are not the work, for either side
    import equiv, equiv.porting, equiv.files, equiv.frameworks.slim, equiv.frameworks.torch
    assert equiv.frameworks.slim.available() is None  # imports tf_slim
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
# Reset the kernel's peak-RSS mark (VmHWM) so the peak measured is the work's own, not the
# imports'; the baseline is what the process holds once TensorFlow and safetensors are in.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
t0 = time.perf_counter()
if mode == "bare":
    reader = tf.train.load_checkpoint(ckpt)
    tensors = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    if out.endswith(".safetensors"):
        save_file(tensors, out)
    else:
        torch.save({n: torch.from_numpy(t) for n, t in tensors.items()}, out)
else:
    equiv.port(variant, ckpt, out, force=True)
dt = time.perf_counter() - t0
peak = status("VmHWM")
print(json.dumps({"mode": mode, "seconds": dt, "base_mb": base / 1024, "peak_mb": peak / 1024}))
"""


def run(mode: str, ckpt: Path, out: Path, variant: str) -> dict:
    # What the previous run wrote and did not sync itself (the bare writer: torch.save, no fsync) is
    # flushed now, not while the next run works: no run pays for the other's writeback.
    os.sync()
    r = subprocess.run([sys.executable, "-c", WORKER, mode, str(ckpt), str(out), variant], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="slim/resnet_v2_152", help="a slim-native variant")
    ap.add_argument("--to", choices=["safetensors", "torch"], default="safetensors")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    from equiv import canonical, files, variants, weights

    v = variants.get(args.variant)
    suffix = ".safetensors" if args.to == "safetensors" else ".pt"
    stem = f"port_{v.name.replace('/', '_')}_to_{args.to}"
    if (v.name, args.to) == ("slim/resnet_v2_152", "safetensors"):
        stem = "port_slim_to_safetensors"  # the first figures' name
    weights_mb = sum(a.nbytes for a in weights.random_params(v, 0).values()) / 2**20
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.ckpt"
        print("writing the checkpoint ...", file=sys.stderr)
        files.write(weights.random_params(v, 0), ckpt, v)
        rows = []
        for i in range(args.rounds):
            for mode in ("bare", "equiv"):
                r = run(mode, ckpt, Path(tmp) / f"{mode}{suffix}", v.name)
                rows.append(r)
                print(f"round {i + 1}: {mode:5s} {r['seconds']:.2f}s, "
                      f"peak {r['peak_mb'] - r['base_mb']:.0f} MB above base", file=sys.stderr)
    load_after = os.getloadavg()
    med = {m: statistics.median(r["seconds"] for r in rows if r["mode"] == m) for m in ("bare", "equiv")}
    mem = {m: max(r["peak_mb"] - r["base_mb"] for r in rows if r["mode"] == m) for m in ("bare", "equiv")}
    result = {
        "command": f"python benchmarks/port_slim_to_safetensors.py --variant {v.name} --to {args.to} "
                   f"--rounds {args.rounds}",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version()},
        "load_average_1_5_15_before": load_before, "load_average_1_5_15_after": load_after,
        "variant": v.name, "parameters": canonical.param_count(v), "weights_mb": round(weights_mb, 1),
        "median_seconds": med, "time_ratio": med["equiv"] / med["bare"],
        "peak_above_base_mb": mem, "memory_ratio_to_weights": mem["equiv"] / weights_mb,
        "rounds": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    writer = "safetensors" if args.to == "safetensors" else "torch.save"
    md = (f"# Port {v.name} checkpoint -> {args.to}\n\n`{result['command']}` on {platform.platform()}\n\n"
          f"| | median time | peak memory above base |\n|---|---:|---:|\n"
          f"| bare (tf.train.load_checkpoint + {writer}) | {med['bare']:.2f} s | {mem['bare']:.0f} MB |\n"
          f"| equiv port | {med['equiv']:.2f} s | {mem['equiv']:.0f} MB |\n\n"
          f"time ratio {result['time_ratio']:.2f} (target <= 1.5); equiv's peak is "
          f"{result['memory_ratio_to_weights']:.2f}x the weights' {weights_mb:.0f} MB (target <= 2); load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    (out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
