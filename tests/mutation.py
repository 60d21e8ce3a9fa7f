"""The mutation property's machinery (tests/test_properties.py, benchmarks/mutation_fields.py).

A description `v` with one convention changed (`m`, from equiv.strategies.mutations) is built in
a real framework and run on `v`'s weights. Then, on one input:

* where `m` needs other parameters than `v`, the framework's loader refuses `v`'s weights
  (ParamMismatchError) before any number is computed: outcome "parameters";
* otherwise the framework's taps of `m` must agree with the float64 reference of `m` at every
  tap (the framework realises the change), and its first tap that diverges from the reference
  of `v` must be the first tap at which the two references differ: outcome "changed" (a number
  changed, caught at the first tap it affects) or, where no tap differs, the framework check
  passes: outcome "below tolerance" where the float64 references still differ somewhere (an
  epsilon of 1.001e-5 for 1e-5 moves a number by about 1e-9 of its scale, which float32 cannot
  resolve), else the change moved no number at all;
* `plan` says, from the descriptions alone, what each computes at this input size (pads as
  amounts, ReLUs and norms as flags, a pool's pad value only where it can win a max). Equal
  plans prove the convention irrelevant here, and then the references must be bit-identical
  (outcome "irrelevant"); a convention whose plan changes but whose numbers do not is outcome
  "unchanged" (allowed, counted: the table's misses).
"""

from __future__ import annotations

import numpy as np

from equiv import canonical as C
from equiv import compare
from equiv import reference as R
from equiv.errors import ParamMismatchError
from equiv.families.resnet import plan as P
from equiv.frameworks import adapter
from equiv.variants import Variant

OUTCOMES = ("changed", "below tolerance", "unchanged", "irrelevant", "parameters")


def plan(v: Variant, height: int, width: int) -> tuple:
    """What `v` computes on a height x width input, each convention resolved to its effect at
    that size. Equal plans (and equal weights) compute the same function."""
    sizes = (height, width)
    items: list = []

    def conv(c: P.Conv, sizes):
        pads = tuple(C.pad_amounts(c.padding, n, c.kernel, c.stride) for n in sizes)
        out = tuple(C.output_size(c.padding, n, c.kernel, c.stride) for n in sizes)
        return (c.name, c.kernel, c.cin, c.cout, c.stride, pads, c.bias, c.norm, c.relu, c.groups), out

    stem = P.stem(v)
    for c in P.stem_convs(v):  # one conv, or a deep stem's
        rec, sizes = conv(c, sizes)
        items.append(rec)
    pads = tuple(C.pad_amounts(v.pool_padding, n, v.pool_kernel, v.pool_stride) for n in sizes)
    # A pad value matters only if the pool pads and its input can be negative (after a ReLU, a
    # zero pad never beats the window's real values, of which there is always one).
    value = v.pool_pad_value if any(sum(p) for p in pads) and not stem.relu else "either"
    items.append(("stem/pool", v.pool_kernel, v.pool_stride, pads, value))
    sizes = tuple(C.output_size(v.pool_padding, n, v.pool_kernel, v.pool_stride) for n in sizes)
    norms = stem.norm
    for u in P.units(v):
        head = (u.name, u.stride, v.preact, v.preact_relu if v.preact else None)
        if u.shortcut:
            # ResNet-D: the projection of a strided unit averages 2x2 windows first (its conv has stride 1)
            into = tuple(-(-n // u.stride) for n in sizes) if u.avg_down else sizes
            shortcut, _ = conv(u.shortcut, into)
            shortcut = (*shortcut, "avg" if u.avg_down else "none")
            norms |= u.shortcut.norm
        else:
            shortcut = ("identity", u.stride, v.identity_from if v.preact else "input")
        convs = []
        for c in u.convs:
            rec, sizes = conv(c, sizes)
            convs.append(rec)
            norms |= c.norm
        items.append((head, shortcut, tuple(convs)))
    norms |= v.preact  # pre-activations and post-norm
    items.append(("head", v.preact, v.head_pool, v.head_pool_stride, v.head_activation, v.num_classes, v.head))
    items.append(("batchnorm", v.bn_epsilon, v.bn_scale, v.norm, v.norm_groups if v.norm == "group" else None)
                 if norms else ("no batchnorm",))
    items.append(("weight standardisation", v.ws_epsilon) if v.weight_std else ("raw kernels",))
    return tuple(items)


def _taps(outputs: dict[str, np.ndarray], v: Variant) -> dict[str, np.ndarray]:
    """Taps with the head's output called "output" (logits or probs: a changed head activation
    renames it)."""
    out = dict(outputs)
    out["output"] = out.pop(C.output_tap(v))
    return out


def _names(v: Variant) -> list[str]:
    return C.tap_names(v)[:-1] + ["output"]


def first_divergence(v: Variant, a: dict, b: dict, names: list[str]) -> str | None:
    results = compare.compare_taps({"a": a, "b": b}, names, {**compare.tap_tolerances(v),
                                                             "output": compare.tap_tolerances(v)[C.output_tap(v)]})
    first = compare.first_divergence(results)
    return first.name if first else None


def build_and_run(fw: str, m: Variant, params, x) -> dict[str, np.ndarray] | None:
    """Build `m` in `fw`, load `params` and run `x`; None where the loader refuses the params."""
    ad = adapter(fw)
    model = ad.build(m)
    try:
        try:
            ad.load_params(m, model, params)
        except ParamMismatchError:
            return None
        return ad.run(m, model, x)
    finally:
        if hasattr(model, "close"):
            model.close()


def check_mutation(v: Variant, field: str, m: Variant, fw: str, params, x) -> dict:
    """Run the mutation property on one example; assert it; return what happened (a JSON row)."""
    h, w = x.shape[1:3]
    same_plan = plan(v, h, w) == plan(m, h, w)
    row = {"field": field, "from": getattr(v, field), "to": getattr(m, field), "framework": fw,
           "size": [h, w], "plan_differs": not same_plan, "tap": None}
    different_params = C.param_shapes(m) != C.param_shapes(v)
    got = build_and_run(fw, m, params, x)
    if different_params:
        assert got is None, f"{fw} loaded {v.name}'s weights into a description that needs others"
        assert not same_plan, "the plan missed a change of parameters"
        row["outcome"] = "parameters"
        return row
    assert got is not None, f"{fw} refused weights of exactly the right names and shapes"
    names = _names(v)
    ref_v, ref_m, got = _taps(R.forward(v, params, x), v), _taps(R.forward(m, params, x), m), _taps(got, m)
    realised = first_divergence(v, ref_m, got, names)
    assert realised is None, f"{fw} does not compute the changed description: diverges at {realised}"
    changed = first_divergence(v, ref_v, ref_m, names)
    caught = first_divergence(v, ref_v, got, names)
    assert caught == changed, (f"{field} {row['from']!r} -> {row['to']!r}: the references first differ at "
                               f"{changed}, {fw}'s build of the change diverges first at {caught}")
    moved = [t for t in names if ref_v[t].shape != ref_m[t].shape or not np.array_equal(ref_v[t], ref_m[t])]
    if same_plan:
        assert not moved, f"the plan proves {field} irrelevant here, yet {moved[0]} changed"
    row["tap"] = changed
    row["moved"] = moved[0] if moved else None
    row["outcome"] = ("changed" if changed else "below tolerance" if moved else
                      "unchanged" if not same_plan else "irrelevant")
    return row

