"""Why a framework pair can exceed the float32 tolerance while each side is within it of the exact value.

For one variant, input size and seed (as tests/test_check.py runs them), run every framework and the
float64 numpy reference on the same weights and input; per tap, each framework's relative error
against the reference (its own rounding walk), and each pair's error, as fractions of the tap's
tolerance. Prints the taps where a pair is worst against its tolerance, with both sides' own errors
and whether they point in opposite directions at the pair's worst element.

    PYTHONPATH=. python benchmarks/pair_tolerance.py keras/ResNet152 --size 35 34 --seed 1 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import numpy as np

from equiv import canonical as C
from equiv import compare
from equiv import reference as R
from equiv import variants as V
from equiv import weights as W
from equiv.frameworks import FRAMEWORKS, adapter, loaded


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant")
    ap.add_argument("--size", type=int, nargs=2, default=(35, 34))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    v = V.get(a.variant)
    h, w = v.input_size or a.size
    fws = sorted(a.frameworks.split(","), key=lambda f: f != v.native)
    params = W.random_params(v, a.seed, cache=False)
    x = W.random_input(v, a.batch, h, w, a.seed)
    out, source = {}, None
    for fw in fws:  # as equiv.checking.check: the native framework's export is what the others load
        with loaded(fw, v) as m:
            ad = adapter(fw)
            ad.load_params(v, m, params if source is None else source)
            source = source or ad.export_params(v, m)
            out[fw] = ad.run(v, m, x)
        print(f"ran {fw}", file=sys.stderr)
    ref = {t: np.asarray(a_, np.float64) for t, a_ in R.forward(v, source, x).items()}
    tols = compare.tap_tolerances(v)
    rows = []
    for t in C.tap_names(v):
        r = ref[t]
        scale = float(np.abs(r).max()) or 1.0
        own = {fw: float(np.abs(out[fw][t] - r).max() / scale) for fw in fws}
        for p, q in itertools.combinations(fws, 2):
            a_, b_ = out[p][t].astype(np.float64), out[q][t].astype(np.float64)
            d = np.abs(a_ - b_)
            i = np.unravel_index(int(np.argmax(d)), d.shape)
            pair_scale = float(np.abs(a_).max()) or 1.0
            rows.append({"tap": t, "pair": [p, q], "tol": tols[t], "pair_rel": float(d[i] / pair_scale),
                         "own_rel": {p: own[p], q: own[q]},
                         "at_worst": {p: float((a_[i] - r[i]) / scale), q: float((b_[i] - r[i]) / scale)}})
    rows.sort(key=lambda r_: -r_["pair_rel"] / r_["tol"])
    print(f"{v.name} {h}x{w} batch {a.batch} seed {a.seed}; load {os.getloadavg()[0]:.2f}")
    print("tap | pair | pair/tol | own/tol of each side | each side's signed error at the pair's worst element "
          "(of scale)")
    for r_ in rows[:a.top]:
        (p, q), t = r_["pair"], r_["tol"]
        print(f"{r_['tap']} | {p}~{q} | {r_['pair_rel'] / t:.2f} | {p} {r_['own_rel'][p] / t:.2f}, "
              f"{q} {r_['own_rel'][q] / t:.2f} | {p} {r_['at_worst'][p]:+.2e}, {q} {r_['at_worst'][q]:+.2e}")
    worst_own = {fw: max(o["own_rel"][fw] / o["tol"] for o in rows if fw in o["pair"]) for fw in fws}
    print("worst own error / tol per framework:", {k: round(x_, 3) for k, x_ in worst_own.items()})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"variant": v.name, "size": [h, w], "seed": a.seed, "worst_own": worst_own,
                       "rows": rows[:200]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
