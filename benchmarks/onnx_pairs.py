"""Every registered variant's check with the onnx backend (tests/test_check.py's settings: 35x34, batch 2,
seed 1, each variant's own size where it has one): the worst relative error of each pair with onnx, as
a fraction of the tap's tolerance, and any pair accepted by the float64 arbitration (compare.arbitrate).

    PYTHONPATH=. python benchmarks/onnx_pairs.py [VARIANT ...] [--skip-slow] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from equiv import canonical as C
from equiv import variants as V
from equiv.checking import check
from equiv.frameworks import FRAMEWORKS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--skip-slow", action="store_true", help="as the default test run: no VGG, one deep ResNet")
    ap.add_argument("--markdown")
    a = ap.parse_args(argv)
    pool = [V.get(n) for n in a.variants] or V.all_variants()
    if a.skip_slow:
        pool = [v for v in pool if v.family != "vgg" and (C.unit_count(v) <= 16 or v.name == "torchvision/resnet101")]
    others = [fw for fw in FRAMEWORKS if fw != "onnx"]
    lines = [f"| variant | {' | '.join(f'{o}~onnx (of tol)' for o in others)} | worst tap | arbitrated | equivalent |",
             "|---|" + "---:|" * len(others) + "---|---|---|"]
    t0, load0 = time.time(), os.getloadavg()[0]
    for v in pool:
        r = check(v, FRAMEWORKS, input_size=v.input_size or (35, 34), batch=2, seed=1)
        worst = {o: max((x for x in r.taps if set(x.pair) == {o, "onnx"}), key=lambda x: x.rel / x.tol) for o in others}
        w = max(worst.values(), key=lambda x: x.rel / x.tol)
        arb = [x for x in r.taps if x.own_rel]
        lines.append(f"| {v.name} | " + " | ".join(f"{worst[o].rel / worst[o].tol:.2f}" for o in others)
                     + f" | {w.name} ({'~'.join(w.pair)}) | {len(arb)} | {r.equivalent} |")
        print(lines[-1], flush=True)
    lines.append(f"\n{len(pool)} variants, {time.time() - t0:.0f} s; load average (1 min) {load0:.2f} before, "
                 f"{os.getloadavg()[0]:.2f} after, {os.cpu_count()} CPUs")
    print(lines[-1])
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
