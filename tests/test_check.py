"""Every registered variant, in every framework, agrees with the others at every tap.

Which code runs on each side is in the test ids (`native=`): the native framework runs the variant's
library code where equiv has it (tf_slim.nets, keras.applications, the seed's programs); the other two
frameworks, and the native one for torchvision/ variants, run equiv's generic builds.
"""

import itertools
import json

import pytest

from equiv import canonical as C
from equiv import variants as V
from equiv import weights as W
from equiv.checking import check, diff
from equiv.frameworks import FRAMEWORKS, adapter
from tests.contract import assert_exports_exactly, repeat_marks

PAIRS = list(itertools.combinations(FRAMEWORKS, 2))


def native_code(v) -> str:
    """The code `check` runs for `v` in its native framework; the other two run equiv's generic builds.
    For torchvision/ variants that is equiv's own torch module in torchvision's layout, not torchvision
    (which does not import beside the pinned torch): real torchvision meets it in tests/test_torchvision.py;
    likewise for timm/ variants where timm does not import (real timm: the same file)."""
    if v.framework == "torchvision" or (v.framework == "timm" and not v.built_by()):
        return "equiv-torch-module"
    return v.built_by() or f"equiv-generic-{v.native}"


def sides(v) -> str:
    others = ", ".join(f"{fw}: equiv generic build" for fw in FRAMEWORKS if fw != v.native)
    return f"{v.native}: {native_code(v)}; {others}"


# The 101- and 152-layer reference variants repeat their 50-layer siblings' blocks: one of them
# (torchvision/resnet101) runs here in CI for depth; the others carry the slow marker (CI budget) and meet
# their stored, cross-checked taps in every framework in CI's `equiv golden verify`.
DEEP_IN_CI = {"torchvision/resnet101"}


def heavy(v) -> list:
    """VGG's 138 M parameters (528 MB) go through every framework: slow (tests/families/test_vgg.py runs
    small VGGs of every convention in the default suite), as Inception v3 at 299x299 (its smallest input
    with the auxiliary head: tests/families/test_inception.py runs small ones); so are the deep ResNets
    but one, and REPEATS."""
    if v.family in ("vgg", "inception") or (C.unit_count(v) > 16 and v.name not in DEEP_IN_CI):
        return [pytest.mark.slow]
    return repeat_marks(v)


def cases(pool):
    return [pytest.param(v, id=f"{v.name}:native={native_code(v)}", marks=heavy(v)) for v in pool]


@pytest.mark.parametrize("v", cases(V.all_variants()))
def test_native_build_and_equiv_generic_builds_agree_at_every_tap(v, record_property):
    """Every framework pair, every tap: the variant's native build (its library's code where equiv has
    it: tf_slim.nets, keras.applications, the seed's programs) against equiv's generic builds."""
    side = C.min_input_size(v)
    report = check(v, FRAMEWORKS, input_size=v.input_size or (max(35, side), max(34, side)), batch=2, seed=1)
    record_property("worst_rel", report.worst_rel)
    assert report.equivalent, f"{v.name} ({sides(v)}): first divergence {report.first}"
    assert {tuple(sorted(r.pair)) for r in report.taps} == {tuple(sorted(p)) for p in PAIRS}
    assert len(report.taps) == len(PAIRS) * len(C.tap_names(v))
    # a pair beyond its tolerance passes only where each side is within it of the float64 reference
    # (compare.arbitrate: two float32 walks in opposite directions), and the notes say so
    arbitrated = [r for r in report.taps if r.rel > r.tol]
    assert all(r.own_rel and max(r.own_rel.values()) <= r.tol for r in arbitrated)
    assert len([n for n in report.notes if "float64 reference" in n]) == len(arbitrated)
    record_property("arbitrated", len(arbitrated))
    # equiv's weights never make a tap that proves nothing (all zero or constant)
    assert report.uninformative == {}, f"{v.name}: uninformative taps {report.uninformative}"


@pytest.mark.slow
@pytest.mark.parametrize("v", V.all_variants(), ids=lambda v: f"{v.name}:native={native_code(v)}")
def test_native_build_and_equiv_generic_builds_agree_at_224(v):
    side = max(224, C.min_input_size(v))  # Inception v3: 299 (slim's only size, torchvision's aux head)
    report = check(v, FRAMEWORKS, input_size=v.input_size or (side, side), batch=2, seed=0)
    assert report.equivalent, f"{v.name} ({sides(v)}): first divergence {report.first}"


@pytest.mark.parametrize("v", [pytest.param(v, id=v.name, marks=heavy(v)) for v in V.all_variants()
                               if C.unit_count(v) <= 16])
def test_port_round_trip_is_bit_exact(v):
    """native -> each other framework in turn -> native: every export is the original, bit for bit."""
    params = W.random_params(v, 5)
    order = sorted(FRAMEWORKS, key=lambda f: f != v.native)
    current = params
    for fw in order + order[:1]:
        ad = adapter(fw)
        m = ad.build(v)
        ad.load_params(v, m, current)
        current = ad.export_params(v, m)
        if hasattr(m, "close"):
            m.close()
        assert_exports_exactly(v, current, params, where=fw)


def test_diff_keras_v2_against_slim_v2_diverges_at_the_stem_pool():
    report = diff("keras/ResNet50V2", "slim/resnet_v2_50", input_size=(64, 64), batch=1)
    assert not report.equivalent
    assert report.first.name == "stem/pool"
    assert next(r for r in report.taps if r.name == "stem/conv").ok  # same conv, same weights
    assert any("pool_padding" in n for n in report.notes)


def test_diff_plumbing_one_variant_twice_in_one_framework_is_bit_exact():
    """Plumbing, not equivalence: one build (equiv's torch module) of one variant, one set of weights,
    twice; diff must report nothing at all."""
    report = diff("torchvision/resnet18", "torchvision/resnet18", "torch", input_size=(32, 32), batch=1)
    assert report.equivalent and report.worst_rel == 0.0


def test_json_report_has_the_documented_fields(tmp_path):
    report = check("torchvision/resnet18", ("torch", "keras"), input_size=(32, 32), batch=1, isolated=True)
    data = json.loads(json.dumps(report.to_json(timings=True)))
    assert "timings_s" not in report.to_json() and "peak_memory_mb" not in report.to_json()  # only when asked
    assert data["equivalent"] is True and data["first_divergence"] is None and data["status"] == "equivalent"
    assert isinstance(data["worst_rel"], float)
    tap = data["taps"][0]
    assert {"name", "pair", "max_abs", "rel", "cosine"} <= set(tap)
    assert {"import", "build", "port", "forward", "compare"} <= set(data["timings_s"])
    # isolated: every framework's own error per segment, small everywhere
    segs = {r["segment"] for r in data["isolated"]}
    assert {"stem/conv", "stage1/unit1", "logits"} <= segs
    assert max(r["made_rel"] for r in data["isolated"]) < 1e-5
