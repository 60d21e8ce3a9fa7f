"""What the property tests actually draw: a histogram per drawn quantity.

Replays the draws of tests/test_properties.py under its settings (the hypothesis profile's
example counts, the run's seed; explicit @examples excluded) without running any framework:
hypothesis draws the same cases whatever the test body does, as long as no example fails.
Tallies input sizes, the stem (conv kernel/stride, pool kernel/stride, pad rules and value),
the structure, and every convention; for the mutation property, the convention changed.

    python benchmarks/property_draws.py [--profile ci] [--seeds 0 1 2 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def draws(seed: int) -> dict:
    """The cases both property tests draw in one run with EQUIV_PROPERTY_SEED=seed (in this process)."""
    from hypothesis import given, settings

    from equiv.families.resnet.strategies import CONVENTIONS
    from tests import test_properties as T

    got = {"agree": [], "mutation": []}

    @T.seed(seed)
    @settings(max_examples=T.EXAMPLES[0], **T.RANDOM)
    @given(case=T.cases())
    def agree(case):
        got["agree"].append(case)

    agree()
    for field in CONVENTIONS:  # as the test's parametrisation runs them
        @T.seed(seed)
        @settings(max_examples=T.EXAMPLES[1], **T.RANDOM)
        @given(case=T.mutation_cases(fields=[field]))
        def mutation(case):
            got["mutation"].append(case)

        mutation()
    return got


def tally(runs: list[dict]) -> dict[str, Counter]:
    """Counts per drawn quantity (values as repr strings)."""
    from equiv.families.resnet import plan as P
    from equiv.families.resnet.strategies import CONVENTIONS
    from tests import mutation as M

    h: dict[str, Counter] = defaultdict(Counter)
    for got in runs:
        for v, (height, width), _ in got["agree"]:
            h["input side"][repr(height)] += 1
            h["input side"][repr(width)] += 1
            h["input parity (h, w)"][f"{'odd' if height % 2 else 'even'}/{'odd' if width % 2 else 'even'}"] += 1
            low = min(height, width)
            h["smaller side"]["16-19" if low < 20 else "20-26" if low < 27 else "27-33"] += 1
            h["stem conv kernel/stride"][f"{v.stem_kernel}/{v.stem_stride}"] += 1
            h["stem pool kernel/stride"][f"{v.pool_kernel}/{v.pool_stride}"] += 1
            h["real stem (7/2 conv, 3/2 pool)"][(v.stem_kernel, v.stem_stride, v.pool_kernel, v.pool_stride)
                                               == (7, 2, 3, 2)] += 1
            h["pool input side (smaller)"][min(P.spatial_sizes(v, n)[0] for n in (height, width))] += 1
            h["last map side (smaller)"][min(P.spatial_sizes(v, n)[-1] for n in (height, width))] += 1
            h["head"]["flattened" if v.head_pool else "global mean"] += 1
            h["block"][v.block] += 1
            h["stages"][len(v.depths)] += 1
            h["units"][sum(v.depths)] += 1
            for name in CONVENTIONS:
                h[name][repr(getattr(v, name))] += 1
        for v, (height, width), _, field, m, fw in got["mutation"]:
            h["mutation: framework"][fw] += 1
            differs = M.plan(v, height, width) != M.plan(m, height, width)
            h[f"mutation of {field}: the plan at that size"]["differs" if differs else "same"] += 1
    return h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: draw one seed, print JSON
    args = ap.parse_args()
    if args.one is not None:
        sys.path.insert(0, str(ROOT))
        _load_profile(args.profile)
        got = draws(args.one)
        counts = {k: [[repr(key), n] for key, n in c.items()] for k, c in tally([got]).items()}
        print(json.dumps({"agree": len(got["agree"]), "mutation": len(got["mutation"]), "counts": counts}))
        return
    h: dict[str, Counter] = defaultdict(Counter)
    n = m = 0
    for s in args.seeds:  # one process per seed: the test module reads its settings when imported
        env = {**os.environ, "EQUIV_HYPOTHESIS_PROFILE": args.profile, "EQUIV_PROPERTY_SEED": str(s),
               "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, __file__, "--profile", args.profile, "--one", str(s)], env=env,
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
        got = json.loads(out.strip().splitlines()[-1])
        n, m = n + got["agree"], m + got["mutation"]
        for key, items in got["counts"].items():
            for value, count in items:
                h[key][value] += count
    lines = [f"# What the property tests draw (profile {args.profile})", "",
             f"`python benchmarks/property_draws.py --profile {args.profile} --seeds "
             f"{' '.join(map(str, args.seeds))}`: {len(args.seeds)} runs, {n} cross-framework examples and "
             f"{m} mutation examples in all (explicit @examples not "
             "counted). Each line: value count (share).", ""]
    for key, c in h.items():
        total = sum(c.values())
        items = sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0])))
        lines.append(f"- **{key}**: " + ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in items))
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"property_draws_{args.profile}.md").write_text(text)
    print(text)


def _load_profile(name: str) -> None:
    """Load equiv's hypothesis profile as its pytest plugin does under pytest."""
    from hypothesis import HealthCheck, settings

    from equiv.pytest_plugin import PROFILES

    for key, options in PROFILES.items():
        settings.register_profile(f"equiv-{key}", deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], **options)
    settings.load_profile(f"equiv-{name}")


if __name__ == "__main__":
    main()
