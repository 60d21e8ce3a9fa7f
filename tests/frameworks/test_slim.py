"""The TF-slim adapter against the numpy reference, its own tf_slim.nets references, and files.

Each variant's model is built once (a module-scoped fixture: pytest groups the tests by
variant and closes a model before building the next, so only one or two graphs live at once).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from equiv import canonical as C
from equiv import compare, reference, variants, weights
from equiv.errors import EquivError, FrameworkError, ParamMismatchError
from equiv.families.resnet import plan as P
from equiv.frameworks import slim
from tests.contract import repeat_marks

pytestmark = pytest.mark.skipif(slim.available() is not None, reason=f"TF-slim not usable: {slim.available()}")

# The ResNets that take any input size (the seed's 224x224-only ones: tests/test_seed.py); these
# tests read ResNet fields (other families have their own tests under tests/families/)
ALL = [v for v in variants.all_variants() if v.family == "resnet" and v.input_size is None]
# tf_slim takes 5-20 s to build a 101- or 152-layer graph (its layers re-read the whole
# variable collection for each new variable), so the variants deeper than 50 layers carry the
# slow marker: the default run covers the 18- to 50-layer ones, `-m ""` all of them.
CASES = [pytest.param(v, id=v.name, marks=[pytest.mark.slow] if C.unit_count(v) > 16 else repeat_marks(v))
         for v in ALL]
SIZES = (33, 32)  # odd and even: a stride-2 SAME op pads differently on each
WORST: dict[str, tuple[float, float]] = {}  # variant @size -> (worst error ratio, worst ratio / tol)


def _ratio(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-30))


@functools.cache
def expected(v, size):
    """Input, float64 reference taps and per-tap tolerances (equiv's own) for `v` at size x size."""
    params = weights.random_params(v, 0)
    x = weights.random_input(v, 2, size, size)
    return x, reference.forward(v, params, x), compare.tap_tolerances(v)


def first_divergence(out, ref, tol):
    """(tap, ratio) of the first tap, in network order, off by more than its tolerance."""
    for t in ref:
        if out[t].shape != ref[t].shape:
            return t, float("inf")
        r = _ratio(out[t], ref[t])
        if not r <= tol[t]:  # NaN fails too
            return t, r
    return None


class Case:
    """One variant's default build, loaded with random_params(v, 0); the generic build of a
    slim-native variant is made on first use."""

    def __init__(self, v):
        self.v = v
        self.params = weights.random_params(v, 0)
        self.model = slim.build(v)
        slim.load_params(v, self.model, self.params)
        self._generic = None

    def generic(self):
        if self._generic is None:
            self._generic = slim.build(self.v, reference=False)
            slim.load_params(self.v, self._generic, self.params)
        return self._generic

    def close(self):
        for m in (self.model, self._generic):
            if m is not None:
                m.close()


@pytest.fixture(scope="module", params=CASES)
def case(request):
    c = Case(request.param)
    yield c
    c.close()


@pytest.fixture(scope="module", autouse=True)
def report_worst():
    yield
    if WORST:
        worst = max(WORST, key=lambda k: WORST[k][0])
        tight = max(WORST, key=lambda k: WORST[k][1])
        print(f"\nworst tap error / tap scale: {WORST[worst][0]:.3g} ({worst}); "
              f"closest to tolerance: {WORST[tight][1]:.2f} of it ({tight})")


# ---------------------------------------------------------------------------------------
# 1. every tap agrees with the numpy reference


@pytest.mark.parametrize("size", SIZES)
def test_taps_match_numpy_reference(case, size):
    v = case.v
    x, ref, tol = expected(v, size)
    out = slim.run(v, case.model, x)
    assert list(out) == C.tap_names(v)
    assert all(a.dtype == np.float32 for a in out.values())
    head = {"pool": (2, P.features(v)), "logits": (2, v.num_classes)}  # a headless network has fewer
    assert all(out[t].shape == shape for t, shape in head.items() if t in out)
    ratios = {t: _ratio(out[t], ref[t]) for t in ref if out[t].shape == ref[t].shape}
    WORST[f"{v.name} @{size}"] = (max(ratios.values()), max(r / tol[t] for t, r in ratios.items()))
    bad = first_divergence(out, ref, tol)
    assert bad is None, f"first divergent tap {bad[0]}: error {bad[1]:.3g} of its scale (tol {tol[bad[0]]:.3g})"


def test_run_selects_taps_and_takes_any_size(case):
    v = case.v
    n = C.min_input_size(v)
    x = weights.random_input(v, 1, n, n + 1)  # the smallest input, not square
    out = slim.run(v, case.model, x, taps="logits")  # the output: a headless network's last tap
    last = C.output_tap(v)
    assert list(out) == [last] and out[last].shape == (1, *C.tap_shapes(v, n, n + 1)[last])
    assert np.isfinite(out[last]).all()
    with pytest.raises(EquivError, match="unknown tap"):
        slim.run(v, case.model, x, taps=["nope"])


# ---------------------------------------------------------------------------------------
# 4. slim-native variants: tf_slim.nets itself, and the generic builder, agree


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0].native == "slim"], indirect=True)
def test_generic_builder_equals_tf_slim_nets(case):
    """equiv's generic slim graph vs the variant's library code (tf_slim.nets, or the seed's program)."""
    v = case.v
    assert case.model.reference
    generic = case.generic()
    assert not generic.reference
    for size in SIZES:
        x = expected(v, size)[0]
        ref, gen = slim.run(v, case.model, x), slim.run(v, generic, x)
        # The two graphs are op for op the same (explicit Pad + VALID conv where strided,
        # SAME elsewhere, fused BatchNorm), so they agree to the bit.
        differ = [t for t in ref if not np.array_equal(ref[t], gen[t])]
        assert not differ, f"generic and tf_slim.nets differ first at {differ[0]} (size {size})"


def test_framework_names_are_the_graphs_names(case):
    """framework_names is what the graph holds: for slim-native variants the names that
    tf_slim.nets itself creates, for the others the generic builder's (same scheme)."""
    v = case.v
    names = slim.framework_names(v)
    # the model's variables are read from its graph, not from framework_names
    assert sorted(names.values()) == sorted(case.model.variables)
    for canon, shape in C.param_shapes(v).items():
        want = (1, 1, *shape) if canon == "logits/kernel" else shape
        assert tuple(case.model.variables[names[canon]].shape) == want, canon


def test_framework_names_examples():
    names = slim.framework_names(variants.get("slim/resnet_v2_50"))
    assert names["stage1/unit1/conv1/bn/gamma"] == "resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/BatchNorm/gamma"
    assert names["stage1/unit1/preact/moving_mean"] == "resnet_v2_50/block1/unit_1/bottleneck_v2/preact/moving_mean"
    assert names["stage1/unit1/shortcut/bias"] == "resnet_v2_50/block1/unit_1/bottleneck_v2/shortcut/biases"
    assert names["stem/conv/bias"] == "resnet_v2_50/conv1/biases"
    assert names["post/beta"] == "resnet_v2_50/postnorm/beta"
    assert names["logits/kernel"] == "resnet_v2_50/logits/weights"
    tv = slim.framework_names(variants.get("torchvision/resnet18"))
    assert tv["stage2/unit1/shortcut/bn/moving_variance"] == \
        "resnet18/block2/unit_1/basic_v1/shortcut/BatchNorm/moving_variance"


def test_reference_only_where_tf_slim_nets_has_it():
    with pytest.raises(FrameworkError):
        slim.build(variants.get("torchvision/resnet50"), reference=True)
    # a slim/ name whose description was changed is no longer what tf_slim.nets computes
    with pytest.raises(FrameworkError):
        slim.build(variants.get("slim/resnet_v2_50").replace(bn_epsilon=1e-3), reference=True)


# ---------------------------------------------------------------------------------------
# 5. negative controls: the comparison above does catch a wrong weight or a wrong convention


@pytest.fixture(scope="module")
def v2_50():
    v = variants.get("slim/resnet_v2_50")
    return v, weights.random_params(v, 0)


def _first_divergence_of(v_built, v_true, params, size=32):
    model = slim.build(v_built, reference=False)
    try:
        slim.load_params(v_built, model, params)
        x, ref, tol = expected(v_true, size)
        return first_divergence(slim.run(v_built, model, x), ref, tol)
    finally:
        model.close()


def test_control_perturbed_kernel_is_caught_at_its_layer(v2_50):
    v, params = v2_50
    params = dict(params)
    k = params["stage2/unit1/conv2/kernel"].copy()
    k[1, 1, 0, 0] += 0.05 * np.abs(k).max()
    params["stage2/unit1/conv2/kernel"] = k
    bad = _first_divergence_of(v, v, params)
    assert bad is not None and bad[0] == "stage2/unit1/conv2", bad


@pytest.mark.parametrize("change, first_tap", [
    ({"pool_padding": "symmetric", "pool_pad_value": "zero"}, "stem/pool"),  # keras ResNet50V2's pool
    ({"conv_padding": "tf_same"}, "stage1/unit3/conv2"),  # the first strided 3x3 conv
    ({"bn_epsilon": 1e-3}, "stage1/unit1/preact"),  # the first BatchNorm
], ids=["pool-padding", "conv-padding", "bn-epsilon"])
def test_control_wrong_convention_is_caught_where_it_acts(v2_50, change, first_tap):
    v, params = v2_50
    bad = _first_divergence_of(v.replace(**change), v, params)
    assert bad is not None and bad[0] == first_tap, bad


# ---------------------------------------------------------------------------------------
# checkpoint files


def test_checkpoint_round_trip(tmp_path):
    v = variants.get("torchvision/resnet18")
    params = weights.random_params(v, 0)
    model = slim.build(v)
    try:
        slim.load_params(v, model, params)
        prefix = slim.write_file(v, model, tmp_path / "model.ckpt")
    finally:
        model.close()
    back = slim.read_file(v, prefix)
    assert list(back) == list(C.param_shapes(v))
    assert all(np.array_equal(back[k], params[k]) for k in params)
    with pytest.raises(ParamMismatchError) as e:
        slim.read_file(variants.get("torchvision/resnet34"), prefix)
    assert e.value.source == str(prefix)


def test_reads_checkpoint_written_by_plain_tf_slim(tmp_path):
    """A checkpoint written by tf_slim.nets with a plain Saver, as the official ones were."""
    import tensorflow as tf
    import tf_slim
    from tf_slim.nets import resnet_v1

    v = variants.get("slim/resnet_v1_50")
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        with tf_slim.arg_scope(resnet_v1.resnet_arg_scope()):
            resnet_v1.resnet_v1_50(x, num_classes=1001, is_training=False)
        step = tf.compat.v1.train.get_or_create_global_step()  # bookkeeping, not a parameter
        stored = [var for var in tf.compat.v1.global_variables() if var is not step]
        init = tf.compat.v1.global_variables_initializer()
        # moving statistics initialise to constants: randomise everything so the mapping shows
        randomise = [var.assign(tf.random.normal(var.shape, seed=i)) for i, var in enumerate(stored)]
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(init)
            session.run(randomise)
            values = dict(zip([var.op.name for var in stored], session.run(stored)))
            prefix = saver.save(session, str(tmp_path / "resnet_v1_50.ckpt"))
    params = slim.read_file(v, prefix)
    names = slim.framework_names(v)
    assert list(params) == list(C.param_shapes(v))
    for canon, a in params.items():
        assert np.array_equal(a, values[names[canon]].reshape(a.shape)), canon
    assert params["logits/kernel"].shape == (2048, 1001)
    with pytest.raises(ParamMismatchError) as e:
        slim.read_file(variants.get("slim/resnet_v2_50"), prefix)
    assert e.value.source == prefix
