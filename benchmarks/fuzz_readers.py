"""Fuzzing the weight-file readers at length, with the counts to quote.

Runs tests/test_fuzz.py (hypothesis profile `thorough` unless given: 1000 damaged files per
format) and writes what happened to every case: per format, how many loaded a valid result
and how many raised EquivError (no other outcome passes the test), by kind of damage, and the
distinct error messages (paths taken out; also with numbers taken out, as kinds of message).

    python benchmarks/fuzz_readers.py [--profile thorough] [--examples N] [--out benchmarks/results]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="thorough", help="hypothesis profile (ci, dev, thorough)")
    ap.add_argument("--examples", type=int, help="cases per format (default: 5x the profile's max_examples)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.json"
        env = dict(os.environ, EQUIV_HYPOTHESIS_PROFILE=args.profile, EQUIV_FUZZ_REPORT=str(report))
        if args.examples:
            env["EQUIV_FUZZ_EXAMPLES"] = str(args.examples)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider"],
                           cwd=ROOT, env=env)
        seconds = time.perf_counter() - t0
        data = json.loads(report.read_text())
    command = f"python benchmarks/fuzz_readers.py --profile {args.profile}" + (
        f" --examples {args.examples}" if args.examples else "")
    data = {"command": command, "machine": platform.platform(), "seconds": round(seconds), "passed": r.returncode == 0,
            **data}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fuzz_readers.json").write_text(json.dumps(data, indent=2) + "\n")
    summary = (f"`{command}` on {data['machine']}: {data['cases']} cases in {data['seconds']} s, "
               f"{'all passed' if data['passed'] else 'FAILED'}")
    lines = ["# Fuzzing the weight-file readers", "", summary, "",
             ("| format | cases | loaded a valid result | EquivError naming the file | other | damage (cases) "
              "| distinct messages |"),
             "|---|---:|---:|---:|---:|---|---:|"]
    for fmt, f in data["formats"].items():
        o = f["outcomes"]
        other = sum(n for k, n in o.items() if k not in ("loaded", "error"))
        damage = ", ".join(f"{k} {n}" for k, n in sorted(f["damage"].items()))
        lines.append(f"| {fmt} | {f['cases']} | {o.get('loaded', 0)} | {o.get('error', 0)} | {other} | {damage} "
                     f"| {f['distinct_messages']} |")
    distinct = (f"{data['distinct_messages']} distinct error messages over all formats (paths taken out), "
                f"{data['distinct_message_kinds']} once numbers (offsets, sizes, checksums) are taken out too.")
    damage_kinds = ("Damage: flip = up to 8 bytes overwritten anywhere; truncate = the file cut short; swap = two "
                    "tensors exchanged under their names (a valid file of the wrong shapes, or silently other values "
                    "where the shapes agree); inner = a .keras archive whose model.weights.h5 is damaged inside a "
                    "sound zip; struct:NAME = a structural attack on a valid file (tests/fuzzing.ATTACKS: external "
                    "raw storage, external links, virtual datasets, soft links out of the weights, declared-size "
                    "bombs, impossible shapes in a TF index, integer dtypes), which must be refused: loading one "
                    "fails the case. Each case is read in a worker process (a crash or a hang would fail the case).")
    lines += ["", distinct, "", damage_kinds, "", "Most frequent messages:", ""]
    lines += [f"- {n} x `{m}`" for m, n in list(data["messages"].items())[:15]]
    (out / "fuzz_readers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12 + len(data["formats"])]))
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
