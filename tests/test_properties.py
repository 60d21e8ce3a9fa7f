"""Property tests: random small variant descriptions, every convention field drawn.

* All three frameworks and the float64 numpy reference agree at every tap, and weight round
  trips are bit-exact (inputs of 16 to 33 pixels a side, batch 1; explicit examples pin the
  real stems: a 7x7/2 conv and a 3x3/2 max pool under each pad rule, on odd and even sizes).
* Mutation: one convention changed and built in a real framework either diverges from the
  original's reference at the first tap the change affects, or the description proves the
  convention irrelevant at that size and the check passes, or the loader refuses weights that
  no longer fit (tests/mutation.py); each convention in turn, so every run changes every one.

Examples per run come from the hypothesis profile (EQUIV_HYPOTHESIS_PROFILE): `EXAMPLES`.
The "ci" profile draws one fixed set (CI_SEED); other profiles draw afresh each run, from a seed
that a failure prints; EQUIV_PROPERTY_SEED=N replays a run (and hypothesis prints a
@reproduce_failure blob for the minimal example).
"""

import itertools
import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, note, seed, settings
from hypothesis import strategies as st

from equiv import canonical as C
from equiv import compare
from equiv import reference as R
from equiv import strategies as es
from equiv import variants as V
from equiv import weights as W
from equiv.families.resnet import strategies as rs
from equiv.frameworks import FRAMEWORKS, adapter
from tests import mutation as M

PROFILE = settings.get_current_profile_name().removeprefix("equiv-")
# (cross-framework agreement, mutation per convention) examples per profile; other profiles: their
# own count, and a tenth of it per convention (27 conventions)
EXAMPLES = {"ci": (50, 2), "dev": (12, 1), "thorough": (500, 20)}.get(
    PROFILE, (settings().max_examples, max(1, settings().max_examples // 10)))
# CI ("ci") draws one fixed set, from CI_SEED: a fresh draw there found a false failure of the
# scale-relative tolerance (a 1-class head's logit of 0.003 off by 5.2e-7, rel 1.8e-4; seed
# 203194501, input 16x22), which stays open until tolerances take a tap's input scale into account.
# Every other profile (nightly "thorough", "dev") draws afresh each run.
CI_SEED = 4242
SEED = int(os.environ.get("EQUIV_PROPERTY_SEED")
           or (CI_SEED if PROFILE == "ci" else random.SystemRandom().randrange(2**32)))
MIN_SIDE, MAX_SIDE = 16, 33
# Drawn from SEED (hypothesis' own "ci" profile would derandomise).
RANDOM = dict(derandomize=False, database=None, print_blob=True)

# Small structures (the cost is the three frameworks' graph builds, not the pixels).
SMALL = dict(max_stages=3, max_units=2, min_width=4, max_width=8, max_classes=4, min_side=MIN_SIDE)


@st.composite
def cases(draw, flatten=None):
    """(description, (height, width), seed): an input of MIN_SIDE to MAX_SIDE a side."""
    v = draw(es.variants(**SMALL, flatten=flatten))
    lo = max(MIN_SIDE, C.min_input_size(v))
    shape = draw(es.input_shapes(v, batch=1, min_side=lo, max_side=max(lo, MAX_SIDE)))
    return v, shape[1:3], draw(st.integers(0, 2**16))


# The real stems, small elsewhere: torchvision (symmetric pads, -inf), slim (TF SAME pool),
# keras V2 (zero-padded pool after a stem without ReLU, where the zero can win the max), the
# seed's slim (VALID pool); odd sizes (17, 33) and even (16, 32), where TF SAME pads unevenly.
_TINY = dict(name="hypothesis/stem", depths=(1, 1), widths=(3, 4), strides=(2, 2), stem_width=4,
             num_classes=3, reference="")
STEMS = [
    (V.get("torchvision/resnet18").replace(**_TINY), (17, 33), 0),
    (V.get("torchvision/resnet50").replace(**_TINY, bottleneck_expansion=2), (32, 16), 1),
    (V.get("slim/resnet_v1_50").replace(**_TINY, bottleneck_expansion=2), (16, 32), 2),
    (V.get("slim/resnet_v2_50").replace(**_TINY, bottleneck_expansion=1), (33, 17), 3),
    (V.get("keras/ResNet50V2").replace(**_TINY, bottleneck_expansion=1), (32, 17), 4),
    (V.get("keras/ResNet50").replace(**_TINY, bottleneck_expansion=1), (17, 16), 5),
    (V.get("seed/slim_resnet_v2_50").replace(**_TINY), (33, 32), 6),
]


def with_stems(test):
    for case in STEMS:
        test = example(case=case)(test)
    return test


def run(fw, v, params, x):
    ad = adapter(fw)
    m = ad.build(v)
    try:
        ad.load_params(v, m, params)
        return ad.run(v, m, x), ad.export_params(v, m)
    finally:
        if hasattr(m, "close"):
            m.close()


@seed(SEED)
@settings(max_examples=EXAMPLES[0], **RANDOM)
@with_stems
@given(case=cases())
def test_random_variants_agree_everywhere(case):
    v, (h, w), s = case
    note(f"EQUIV_PROPERTY_SEED={SEED} replays this run; input {h}x{w}, seed {s}")
    note(repr(v.conventions()))
    x = W.random_input(v, 1, h, w, s)
    params = W.random_params(v, s, cache=False)
    outputs, exported = {"reference": R.forward(v, params, x)}, {}
    for fw in FRAMEWORKS:
        outputs[fw], exported[fw] = run(fw, v, params, x)
    results = compare.compare_taps(outputs, C.tap_names(v), compare.tap_tolerances(v),
                                   pairs=[("reference", fw) for fw in FRAMEWORKS]
                                   + list(itertools.combinations(FRAMEWORKS, 2)))
    assert len(results) == (len(FRAMEWORKS) + len(FRAMEWORKS) * (len(FRAMEWORKS) - 1) // 2) * len(C.tap_names(v))
    first = compare.first_divergence(results)
    assert first is None, first
    for fw, params_back in exported.items():
        assert list(params_back) == list(params)
        for k in params:
            assert np.array_equal(params_back[k], params[k]), (fw, k)


def test_the_real_stems_are_pinned():
    stems = {(v.stem_kernel, v.stem_stride, v.pool_kernel, v.pool_stride) for v, _, _ in STEMS}
    assert stems == {(7, 2, 3, 2)}
    rules = {(v.pool_padding, v.pool_pad_value) for v, _, _ in STEMS}
    assert rules == {("symmetric", "-inf"), ("tf_same", "-inf"), ("symmetric", "zero"), ("valid", "-inf")}
    sides = {n for _, size, _ in STEMS for n in size}
    assert {n % 2 for n in sides} == {0, 1} and min(sides) >= MIN_SIDE


@st.composite
def mutation_cases(draw, fields=None):
    """A description with a global-mean head (a flattened one turns most size changes into a
    change of parameters), an input, one convention changed, and the framework that builds it.

    Three in four are drawn again until the change is one the description lets matter (its plan
    at that size differs: a pool that pads, a unit whose stride can move, an even side under
    TF SAME); the fourth is left as drawn, so irrelevance is proven too."""
    relevant = draw(st.sampled_from([True, True, True, False]))
    v, size, s = draw(cases(flatten=False))
    # A wide stem: a pool's pad value can only show where some border window of some channel
    # holds no positive value, and with a few channels that is often nowhere.
    width = draw(st.integers(16, 32))
    if v.norm == "group":  # GroupNorm's groups divide the stem's channels too (issue 16 B)
        width = max(v.norm_groups, width - width % v.norm_groups)
    v = v.replace(stem_width=width)
    field, m = draw(es.mutations(v, size=size, fields=fields))
    if relevant:
        assume(M.plan(v, *size) != M.plan(m, *size))
    return v, size, s, field, m, draw(st.sampled_from(FRAMEWORKS))


@pytest.mark.parametrize("convention", list(rs.CONVENTIONS))
@seed(SEED)
@settings(max_examples=EXAMPLES[1], **RANDOM, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_a_changed_convention_diverges_at_its_first_tap_or_is_proven_irrelevant(convention, data):
    v, (h, w), s, field, m, fw = data.draw(mutation_cases(fields=[convention]), label="case")
    note(f"EQUIV_PROPERTY_SEED={SEED} replays this run; input {h}x{w}, seed {s}, {fw}")
    note(f"{field}: {getattr(v, field)!r} -> {getattr(m, field)!r} in {v.conventions()!r}")
    row = M.check_mutation(v, field, m, fw, W.random_params(v, s, cache=False), W.random_input(v, 1, h, w, s))
    assert row["outcome"] in M.OUTCOMES
