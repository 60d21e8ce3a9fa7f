"""Peak memory of `equiv check` on the largest variants, against equiv's up-front estimate.

Each check runs as the command line runs it (`python -m equiv.cli check VARIANT`, defaults:
224x224, batch 2, slim, keras and torch), in its own process; its peak resident memory is the
kernel's, from wait4. The estimate is `equiv.memory.estimate`, which `check` compares with the
memory available before it starts (and refuses the job when it does not fit).

    python benchmarks/check_peak_memory.py [VARIANT ...] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(name: str) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "equiv.cli", "check", name, "-q"], cwd=ROOT, stdout=out,
                                stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, from the kernel
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{stderr[-3000:]}")
    verdict = next(line for line in stdout.splitlines() if line.startswith(("EQUIVALENT", "NOT", "NON")))
    return {"variant": name, "peak_bytes": usage.ru_maxrss * 1024, "seconds": time.perf_counter() - t0,
            "verdict": verdict.split(":")[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", help="default: every variant of the largest depth")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    from equiv import canonical, memory, variants

    names = args.variants or [v.name for v in sorted(variants.all_variants(), key=canonical.param_count)
                              if sum(v.depths) == max(sum(w.depths) for w in variants.all_variants())]
    rows = []
    for name in reversed(names):  # the largest first
        v = variants.get(name)
        row = measure(name)
        row["estimate_bytes"] = memory.estimate(v, 2, 224, 224, ["slim", "keras", "torch"])["total"]
        row["parameters"] = canonical.param_count(v)
        rows.append(row)
        print(f"{name}: peak {row['peak_bytes'] / 1e9:.2f} GB, estimate {row['estimate_bytes'] / 1e9:.2f} GB, "
              f"{row['seconds']:.0f} s, {row['verdict']}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/check_peak_memory.py" + "".join(f" {n}" for n in args.variants)
    (out / "check_peak_memory.json").write_text(json.dumps(
        {"command": command, "machine": platform.platform(), "rows": rows}, indent=2) + "\n")
    lines = ["# Peak memory of `equiv check` (224x224, batch 2, slim + keras + torch)", "",
             f"`{command}` on {platform.platform()}", "",
             "| variant | parameters | peak memory | up-front estimate | verdict |", "|---|---:|---:|---:|---|"]
    lines += [f"| `{r['variant']}` | {r['parameters']:,} | {r['peak_bytes'] / 1e9:.2f} GB | "
              f"{r['estimate_bytes'] / 1e9:.2f} GB | {r['verdict']} |" for r in rows]
    lines += ["", "GB = 10^9 bytes. Target: under 3 GB for the largest registered variant."]
    (out / "check_peak_memory.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
