"""Negative controls of issue 16 B's conventions, planted in each backend's port of BiT
(timm/resnetv2_50x1_bit: GroupNorm of 32 groups, weight-standardised convs) and caught at their tap.

The good side is the registered BiT built natively in torch (timm's own ResNetV2 where timm imports,
in the torchvision stage's venv; elsewhere equiv's module, its transcription, which
tests/test_torchvision.py shows bit-exact with timm's), first shown equal to the float64 numpy
reference at every tap. The faulty side is a port of its weights into one backend (every registered
one) whose builder realises a description with one convention wrong (tests/test_fault_classes.py's
style): the first diverging tap is asserted exactly, every tap before it agrees, and the faulty side
equals the float64 numpy reference of the faulty network at every tap (the plant is that fault and
nothing else).
"""

from __future__ import annotations

import functools

import pytest

from equiv import canonical as C
from equiv import compare
from equiv import reference as R
from equiv import variants as V
from equiv import weights as W
from equiv.frameworks import FRAMEWORKS, adapter, loaded

SIZE = 32
BIT = "timm/resnetv2_50x1_bit"
BACKENDS = list(FRAMEWORKS)  # every registered backend (onnx too; a new one gets these tests)

FAULTS = {
    # id: (what the port's description gets wrong, the first tap it changes)
    # 16 groups for 32: the first GroupNorm is the first unit's pre-activation (BiT's stem has no norm)
    "groupnorm_16_groups_not_32": ({"norm_groups": 16}, "stage1/unit1/preact"),
    # raw kernels: the stem conv is the first weight-standardised layer
    "no_weight_standardisation": ({"weight_std": False}, "stem/conv"),
}


def _agree(v, a: dict, b: dict) -> list:
    return compare.compare_taps({"a": a, "b": b}, C.tap_names(v), compare.tap_tolerances(v))


@functools.cache
def good():
    """(variant, seeded params, input, its native torch build's taps), unfaulted."""
    v = V.get(BIT)
    params = W.random_params(v, 0)
    x = W.random_input(v, 1, SIZE, SIZE)
    with loaded("torch", v, params) as model:
        taps = adapter("torch").run(v, model, x)
    return v, params, x, taps


def test_the_good_side_is_the_numpy_reference_at_every_tap():
    v, params, x, taps = good()
    wrong = [(r.name, r.status) for r in _agree(v, R.forward(v, params, x), taps) if not r.ok]
    assert not wrong, wrong[:3]


# CI budget: onnx's GroupNorm case (6 s here) is `slow`; its weight-standardisation case runs by default,
# and tests/test_onnx_export_families.py runs GroupNorm graphs in ONNX Runtime by default.
CASES = [pytest.param(fault, fw, marks=[pytest.mark.slow] if (fw, fault) == ("onnx", "groupnorm_16_groups_not_32")
                      else [], id=f"{fault}-{fw}") for fault in FAULTS for fw in BACKENDS]


@pytest.mark.parametrize("fault, fw", CASES)
def test_a_wrong_norm_or_standardisation_is_caught_at_the_first_tap_it_changes(fault, fw):
    """BiT's weights ported into `fw` built for a description with a wrong GroupNorm group count,
    or without weight standardisation: caught at the first tap after the affected layer, by value,
    far beyond rounding."""
    change, first = FAULTS[fault]
    v, params, x, taps = good()
    wrong = v.replace(**change)
    assert wrong.reference_differences() == sorted(change)
    assert C.param_shapes(wrong) == C.param_shapes(v)  # the same weights load: only numbers tell
    with loaded(fw, wrong, params, reference=False) as model:
        bad = adapter(fw).run(wrong, model, x)
    results = _agree(v, taps, bad)
    got = next(r for r in results if not r.ok)
    assert (got.name, got.status) == (first, "diverged"), (got.name, got.status)
    assert got.rel > 10 * got.tol, (got.rel, got.tol)
    assert all(r.ok for r in results[:C.tap_names(v).index(first)])
    print(f"{BIT} | {fw} | {fault} | {got.name} | rel {got.rel:.3g}")
    # the faulty side is exactly the faulty network
    wrong_taps = [(r.name, r.status) for r in _agree(wrong, R.forward(wrong, params, x), bad) if not r.ok]
    assert not wrong_taps, wrong_taps[:3]
