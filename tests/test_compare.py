import math

import numpy as np
import pytest

from equiv import canonical as C
from equiv import compare
from equiv import variants as V
from equiv.errors import EquivError


def test_identical_taps_have_zero_error():
    a = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    r = compare.compare_tap("t", a, a.copy(), ("x", "y"), 1e-5)
    assert r.ok and r.max_abs == 0 and r.rel == 0 and r.cosine == pytest.approx(1.0)


def test_error_is_relative_to_the_tap_scale_and_locates_the_worst_element():
    a = np.zeros((1, 2, 2, 1))
    a[0, 1, 1, 0] = 10.0
    b = a.copy()
    b[0, 0, 1, 0] = 0.01
    r = compare.compare_tap("t", a, b, ("x", "y"), 1e-5)
    assert r.max_abs == pytest.approx(0.01) and r.rel == pytest.approx(1e-3)
    assert r.worst_index == (0, 0, 1, 0) and r.worst_values == (0.0, 0.01)
    assert not r.ok and r.status == "diverged"


def test_all_zero_tap_does_not_divide_by_zero():
    z = np.zeros((1, 2, 2, 3))
    assert compare.compare_tap("t", z, z, ("x", "y"), 1e-5).rel == 0
    r = compare.compare_tap("t", z, z + 1e-9, ("x", "y"), 1e-5)
    assert math.isinf(r.rel) and not r.ok


def test_nonfinite_values_are_reported_as_such():
    a = np.ones((1, 2))
    b = a.copy()
    b[0, 1] = np.nan
    r = compare.compare_tap("logits", a, b, ("x", "y"), 1e-5)
    assert r.status == "nonfinite" and not r.ok


def test_shape_mismatch_is_a_failure_not_a_crash():
    r = compare.compare_tap("t", np.ones((1, 2)), np.ones((1, 3)), ("x", "y"), 1e-5)
    assert r.status == "shape" and not r.ok


def test_tolerances_are_keyed_by_dtype_and_grow_with_depth():
    assert compare.tolerance("float32") < compare.tolerance("float16") < compare.tolerance("bfloat16")
    with pytest.raises(EquivError):
        compare.tolerance("int8")
    tols = compare.tap_tolerances(V.get("torchvision/resnet152"))
    assert tols["stem/conv"] == compare.tolerance("float32")
    assert tols["logits"] == pytest.approx(1e-5 * math.sqrt(1 + 50 * 3 + 1))
    depths = C.tap_depths(V.get("torchvision/resnet152"))
    assert list(depths) == C.tap_names(V.get("torchvision/resnet152"))


def test_first_divergence_follows_network_order():
    v = V.get("torchvision/resnet18")
    taps = C.tap_names(v)
    good = {t: np.ones((1, 2)) for t in taps}
    bad = dict(good)
    bad[taps[5]] = np.full((1, 2), 2.0)
    bad[taps[9]] = np.full((1, 2), 3.0)
    results = compare.compare_taps({"a": good, "b": bad}, taps, compare.tap_tolerances(v))
    assert compare.first_divergence(results).name == taps[5]
    assert compare.worst(results) == pytest.approx(2.0)


def test_uninformative_taps_are_all_zero_or_constant_per_channel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    assert compare.uninformative(x) is None
    assert compare.uninformative(np.zeros_like(x)) == "all zero"
    # each channel one value (a zeroed gamma with a beta): constant, although the channels differ
    assert compare.uninformative(np.broadcast_to(np.float32([1.0, -2.0, 0.5]), x.shape)) == "constant"
    one = x.copy()
    one[1, 2, 3, 0] += 1.0  # one value that moves in one channel is information
    assert compare.uninformative(np.broadcast_to(np.float32([1.0, -2.0, 0.5]), x.shape) + (one - x)) is None
    # a (1, C) head of a batch of one: only all-equal counts
    assert compare.uninformative(np.float32([[0.1, 0.2, 0.3]])) is None
    assert compare.uninformative(np.float32([[0.7, 0.7, 0.7]])) == "constant"
    assert compare.uninformative(np.float32([[np.nan, 0.0]])) is None  # non-finite is its own status
    r = compare.compare_tap("t", np.zeros_like(x), np.zeros_like(x), ("a", "b"))
    assert r.ok and r.uninformative == "all zero" and r.to_json()["uninformative"] == "all zero"


def test_arbitration_accepts_opposite_rounding_walks_and_keeps_a_side_off_the_reference_failed():
    """A pair beyond its tolerance is accepted only when each side is within it of the exact value
    (compare.arbitrate, run by check when a pair fails); a side far from the exact value keeps it failed."""
    rng = np.random.default_rng(0)
    exact = rng.standard_normal((2, 5, 5, 8))
    scale, tol = float(np.abs(exact).max()), 1e-5
    up = exact + 0.8 * tol * scale * np.sign(exact)  # each side 0.8 of the tolerance from the exact value,
    down = exact - 0.8 * tol * scale * np.sign(exact)  # in opposite directions: 1.6 of it apart
    off = exact + 3 * tol * scale  # a wrong convention: far from the exact value
    outputs = {"a": {"t": up.astype(np.float32)}, "b": {"t": down.astype(np.float32)},
               "c": {"t": off.astype(np.float32)}}
    results = compare.compare_taps(outputs, ["t"], tol, pairs=[("a", "b"), ("a", "c")])
    assert [r.ok for r in results] == [False, False]
    notes = compare.arbitrate(results, outputs, {"t": exact})
    ab, ac = results
    assert ab.ok and ab.status == "ok" and ab.rel > tol and set(ab.own_rel) == {"a", "b"}
    assert all(e <= tol for e in ab.own_rel.values()) and "own_rel" in ab.to_json()
    assert not ac.ok and ac.status == "diverged" and ac.own_rel is None and "own_rel" not in ac.to_json()
    assert len(notes) == 1 and notes[0].startswith("a~b at t:")
