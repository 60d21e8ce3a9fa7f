"""Where a forward pass spends its time, per kind of operation, in each engine: what keeps each
backend's best CPU path below the 85% of the machine ceiling that issue 18 aims at.

Each engine's own profiler, on the same weights and input (`torchvision/resnet50`, batch 16,
224x224 by default), after warm-up runs:

* torch: `torch.profiler` over the plain eager module and over `compile_freeze` (the adapter's
  fast path), self time per aten op (or inductor kernel);
* onnx: ONNX Runtime's own profile (`enable_profiling`) of the benchmark's best path (all graph
  optimisations, spinning threads), kernel time per op type (FusedConv, MaxPool, ...);
* slim: TensorFlow's step stats (`RunOptions(trace_level=FULL_TRACE)`) of the slim graph after
  grappler's rewrites, time per op type (`_MklNativeFusedConv2D`, ...).

For each: the share of op time per op type, and the network's FLOPs (equiv.canonical.flops, nearly
all in convolutions) over the convolution ops' time, as a fraction of the matrix-product ceiling
measured in the same run. Shares are taken over summed op time (ops may overlap on 2 cores).

    python benchmarks/op_breakdown.py [--variant torchvision/resnet50] [--batch 16] [--runs 3]
        [--frameworks torch,onnx,slim] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

CONV = re.compile(r"conv|gemm|matmul|addmm|linear", re.I)


def _table(times: dict[str, float], flops: float, ceiling: float) -> dict:
    total = sum(times.values())
    conv = sum(t for k, t in times.items() if CONV.search(k))
    rows = sorted(times.items(), key=lambda kv: -kv[1])
    return {"total_op_seconds": total, "conv_seconds": conv,
            "conv_gflops": flops / conv / 1e9 if conv else None,
            "conv_fraction_of_ceiling": flops / conv / 1e9 / ceiling if conv else None,
            "shares": [(k, t / total) for k, t in rows[:10]]}


def torch_profile(v, params, x, runs: int, path: str) -> dict[str, float]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from equiv.frameworks import adapter, loaded

    ad = adapter("torch")
    with loaded("torch", v, params) as model:
        opts = {} if path == "plain" else ad.FAST_PATHS[path]
        fn = ad.forward_fn(v, model, x, **opts)
        for _ in range(2):
            fn()
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                fn()
    times = collections.Counter()
    for e in prof.key_averages():
        times[e.key] += e.self_cpu_time_total / 1e6 / runs
    return {k: t for k, t in times.items() if t > 0}


def onnx_profile(v, params, x, runs: int) -> dict[str, float]:
    from equiv import canonical as C
    from equiv.frameworks import loaded, onnx

    with loaded("onnx", v, params) as model, tempfile.TemporaryDirectory() as tmp:
        sess = onnx.session(model.proto(*x.shape[1:3], [C.output_tap(v)], referenced=True),
                            initializers=model.params, spin=True, profile_prefix=str(Path(tmp) / "ort"))
        name = sess.get_inputs()[0].name
        for _ in range(2):
            sess.run(None, {name: x})
        for _ in range(runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    times = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            times[e["args"]["op_name"]] += e["dur"] / 1e6
    per_run = runs + 2  # the profile spans every run of the session, warm-ups included
    return {k: t / per_run for k, t in times.items()}


def slim_profile(v, params, x, runs: int) -> dict[str, float]:
    import tensorflow as tf

    from equiv import canonical as C
    from equiv.frameworks import loaded

    with loaded("slim", v, params) as model:
        feed = {model.inputs: x}
        logits = model.taps[C.output_tap(v)]
        for _ in range(2):
            model.session.run(logits, feed)
        times = collections.Counter()
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        for _ in range(runs):
            meta = tf.compat.v1.RunMetadata()
            model.session.run(logits, feed, options=options, run_metadata=meta)
            for dev in meta.step_stats.dev_stats:
                for node in dev.node_stats:
                    m = re.match(r"[^=]+= (\S+?)\(", node.timeline_label)
                    if m:
                        times[m.group(1)] += (node.op_end_rel_micros - node.op_start_rel_micros) / 1e6 / runs
    return {k: t for k, t in times.items() if t > 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="torchvision/resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--frameworks", default="torch,onnx,slim")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    from equiv import bench, variants, weights
    from equiv import canonical as C

    v = variants.get(args.variant)
    params = weights.random_params(v, 0)
    x = weights.random_input(v, args.batch, 224, 224).astype(np.float32)
    flops = C.flops(v, 224, 224) * args.batch
    load_before = os.getloadavg()
    ceiling = bench.matmul_gflops("torch")
    result = {"variant": v.name, "batch": args.batch, "ceiling_gflops": ceiling, "network_gflop": flops / 1e9,
              "engines": {}}
    for fw in args.frameworks.split(","):
        if fw == "torch":
            for path in ("plain", "compile_freeze"):
                result["engines"][f"torch ({path})"] = _table(torch_profile(v, params, x, args.runs, path), flops,
                                                             ceiling)
        elif fw == "onnx":
            result["engines"]["onnx (all optimisations, spin)"] = _table(onnx_profile(v, params, x, args.runs),
                                                                         flops, ceiling)
        elif fw == "slim":
            result["engines"]["slim (grappler)"] = _table(slim_profile(v, params, x, args.runs), flops, ceiling)
        print(f"{fw} done", flush=True)
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "op_breakdown.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Where the forward pass spends its time: {v.name}, batch {args.batch}, 224x224\n",
             f"`python benchmarks/op_breakdown.py --batch {args.batch} --runs {args.runs} --frameworks "
             f"{args.frameworks}`; ceiling (torch's 4096x4096 product, same run) {ceiling:.0f} GFLOP/s; load average "
             f"{load_before[0]:.1f} before, {result['load_average_after'][0]:.1f} after.\n",
             "| engine (path) | op time per run | convolution share | network FLOPs / conv time | of ceiling | "
             "largest op types (share of op time) |", "|---|---:|---:|---:|---:|---|"]
    for name, t in result["engines"].items():
        top = ", ".join(f"{k} {s:.0%}" for k, s in t["shares"][:5])
        lines.append(f"| {name} | {t['total_op_seconds']:.3f} s | {t['conv_seconds'] / t['total_op_seconds']:.0%} | "
                     f"{t['conv_gflops']:.0f} GFLOP/s | {t['conv_fraction_of_ceiling']:.0%} | {top} |")
    (out / "op_breakdown.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
