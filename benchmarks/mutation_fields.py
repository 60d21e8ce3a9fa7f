"""How often each convention the mutation property changes actually changes a number.

Runs the mutation property of tests/test_properties.py (tests/mutation.py: one convention of a
random small description changed, built in a real framework on the original's weights,
compared with the original's float64 reference) for N examples per convention, drawn as the
test draws them but with the convention fixed, and tabulates the outcomes:

* changed: a number changed, and the framework's build diverged exactly at the first tap the
  two references differ at;
* below tolerance: a number changed in the float64 references, by less than float32's
  tolerance at every tap (so the check rightly passes: an epsilon of 1.001e-5 for 1e-5);
* unchanged: the description's plan at that input size differs (so the size allows a
  change), yet no number changed (the misses);
* irrelevant: the plan is the same (a 1x1 pool makes pool padding moot, say), the references
  are bit-identical and the framework check passes;
* parameters: the changed description needs other weights; the framework's loader refuses
  the original's before any number is computed.

"exercised" = (changed + below tolerance) / (changed + below tolerance + unchanged): of the
examples whose size allows a change of numbers (the plan differs, the weights fit), the share
in which one changed. The target is 90% for every convention.

    python benchmarks/mutation_fields.py [--examples 15] [--seed N] [--fields a b] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("changed", "below tolerance", "unchanged", "irrelevant", "parameters")


def run(field: str, examples: int, seed: int) -> list[dict]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as seed_

    from equiv import weights as W
    from tests import mutation as M
    from tests import test_properties as T

    rows = []

    @seed_(seed)
    @settings(max_examples=examples, deadline=None, derandomize=False, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=T.mutation_cases(fields=[field]))
    def prop(case):
        v, (h, w), s, f, m, fw = case
        rows.append(M.check_mutation(v, f, m, fw, W.random_params(v, s, cache=False),
                                     W.random_input(v, 1, h, w, s)))

    prop()
    return rows


def table(rows: list[dict]) -> tuple[str, dict]:
    from equiv.families.resnet.strategies import CONVENTIONS

    by_field: dict[str, Counter] = defaultdict(Counter)
    taps: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        by_field[r["field"]][r["outcome"]] += 1
        if r["tap"]:
            taps[r["field"]]["/".join(p for p in r["tap"].split("/") if not p.startswith("unit"))] += 1
    lines = ["| convention | drawn | changed, caught at its first tap | changed below tolerance | unchanged "
             "(plan differs) | proven irrelevant | other parameters (loader refuses) | exercised | "
             "first taps caught |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    summary = {}
    for field in CONVENTIONS:
        c = by_field.get(field, Counter())
        allowed = c["changed"] + c["below tolerance"] + c["unchanged"]
        share = (c["changed"] + c["below tolerance"]) / allowed if allowed else None
        summary[field] = {**{k: c[k] for k in OUTCOMES}, "drawn": sum(c.values()), "exercised": share}
        where = ", ".join(f"{t} {n}" for t, n in taps[field].most_common(3))
        lines.append(f"| {field} | {sum(c.values())} | {c['changed']} | {c['below tolerance']} | {c['unchanged']} "
                     f"| {c['irrelevant']} | {c['parameters']} | {'-' if share is None else f'{share:.0%}'} "
                     f"| {where} |")
    return "\n".join(lines), summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=15, help="examples per convention")
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--fields", nargs="+", help="only these conventions (default: every one)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from equiv.families.resnet.strategies import CONVENTIONS

    rows, failures = [], {}
    t0 = time.perf_counter()
    for field in args.fields or CONVENTIONS:
        try:
            rows += run(field, args.examples, args.seed)
        except Exception as e:  # a falsified property: say so, keep the others' counts
            failures[field] = f"{type(e).__name__}: {e}"
            print(f"{field}: FAILED: {failures[field][:2000]}", file=sys.stderr)
        print(f"{field}: {sum(r['field'] == field for r in rows)} examples, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    elapsed = time.perf_counter() - t0
    text, summary = table(rows)
    frameworks = Counter(r["framework"] for r in rows)
    verdict = "no property failed" if not failures else "FAILED: " + ", ".join(failures)
    fields = "" if not args.fields else f" --fields {' '.join(args.fields)}"
    head = (f"# Mutation property: what each changed convention did\n\n"
            f"`python benchmarks/mutation_fields.py --examples {args.examples} --seed {args.seed}{fields}`: "
            f"{len(rows)} examples ({args.examples} per convention drawn as tests/test_properties.py draws "
            f"them, the convention fixed), {verdict}; "
            f"{elapsed:.0f} s on {platform.machine()} with {os.cpu_count()} CPUs; builds: "
            f"{', '.join(f'{k} {n}' for k, n in sorted(frameworks.items()))}.\n\n"
            "Each example: a random small description (1-3 stages of 1-2 units, widths 4-8, stem 16-32, inputs "
            "16-33 px, global-mean head), one convention changed to another allowed value, built in "
            "one real framework on the original's weights. *changed, caught*: the build diverged from "
            "the original's float64 reference exactly at the first tap where the two references differ "
            "beyond float32's tolerance. *below tolerance*: the float64 references differ, by less "
            "than that everywhere, and the check passes. *unchanged*: the plan at this input size "
            "differs, no number does (the misses). *proven irrelevant*: the plan is the same "
            "(tests/mutation.py `plan`), the references are bit-identical, the check passes. *other "
            "parameters*: the loader refuses the original's weights. *exercised* = changed (caught "
            "or below tolerance) / (those + unchanged), the share of examples whose size allows a "
            "change in which a number changed.\n\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutation_fields.md").write_text(head + text + "\n")
    (out / "mutation_fields.json").write_text(json.dumps(
        {"examples_per_field": args.examples, "seed": args.seed, "failures": failures, "seconds": elapsed,
         "fields": summary, "rows": rows}, indent=1, default=str) + "\n")
    print(head + text)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
