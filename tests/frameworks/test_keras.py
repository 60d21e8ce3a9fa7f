"""The Keras adapter against the numpy reference, keras.applications, and its own files.

Each variant's model is built and loaded once (a module-scoped fixture, so pytest runs every
test of one variant before building the next).
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest

from equiv import canonical as C
from equiv import compare, reference, variants, weights
from equiv.errors import EquivError, FrameworkError, ParamMismatchError
from equiv.frameworks import keras as K
from tests.contract import repeat_marks

if K.available():
    pytest.skip(K.available(), allow_module_level=True)

import keras  # noqa: E402  (only once we know it imports)

# The ResNets that take any input size (the seed's 224x224-only ones: tests/test_seed.py); these
# tests read ResNet fields (other families have their own tests under tests/families/)
VARIANTS = [v for v in variants.all_variants() if v.family == "resnet" and v.input_size is None]
SIZES = (33, 32)  # odd and even: odd sizes expose asymmetric SAME padding

# float32 models get the harness's tolerances (compare.tap_tolerances: 1e-5 of a tap's scale,
# grown with the square root of its depth, as roundoff accumulates: a flat 1e-5 fails at depth;
# the worst seen here is 8.5e-5, keras/ResNet152 at 33x33). The float64 model is held to 1e-6:
# its taps come back in float32, 6e-8 of rounding.
F64_RTOL = 1e-6


def compared(v, got, want, rtol=None):
    """(first tap in network order off by more than its tolerance, or None; worst ratio)."""
    rtol = compare.tap_tolerances(v) if rtol is None else rtol
    results = compare.compare_taps({"reference": want, "keras": got}, C.tap_names(v), rtol)
    return compare.first_divergence(results), compare.worst(results)


def describe(first) -> str:
    return "all taps agree" if first is None else f"{first.name} off by {first.rel:.3g} of its scale > {first.tol:.3g}"


@functools.lru_cache(maxsize=8)
def expected(v, batch, size):
    """The reference's taps in float64. The parameters are cast first: reference.forward
    applies BatchNorm with the parameters it is given, so float32 ones would put float32
    rounding into every 1/sqrt(var + eps)."""
    params = {k: a.astype(np.float64) for k, a in weights.random_params(v, 0).items()}
    return reference.forward(v, params, weights.random_input(v, batch, size, size))


class Case:
    """One variant's parameters and its default build, loaded."""

    def __init__(self, v):
        self.v = v
        self.params = weights.random_params(v, 0)
        self.model = K.build(v)
        K.load_params(v, self.model, self.params)
        self._taps = {}

    def run(self, size, batch=2, model=None):
        return K.run(self.v, model or self.model, weights.random_input(self.v, batch, size, size))

    def taps(self, size):
        """The loaded model's taps on the standard batch, run once for several tests."""
        if size not in self._taps:
            self._taps[size] = self.run(size)
        return self._taps[size]


# The 101- and 152-layer variants repeat the 50-layer blocks: slow here (CI budget), as in test_slim.py.
@pytest.fixture(scope="module", params=[pytest.param(v, marks=[pytest.mark.slow] if C.unit_count(v) > 16
                                                     else repeat_marks(v)) for v in VARIANTS],
                ids=lambda v: v.name)
def case(request):
    return Case(request.param)


# ---------------------------------------------------------------------------------------
# 1. Every tap of every variant agrees with the numpy reference


@pytest.mark.parametrize("size", SIZES)
def test_taps_match_reference(case, size, record_property):
    v = case.v
    got, want = case.taps(size), expected(v, 2, size)
    assert list(got) == C.tap_names(v)
    for tap, a in got.items():
        assert a.dtype == np.float32 and a.shape == want[tap].shape, tap
    first, worst = compared(v, got, want)
    record_property("worst_ratio", worst)
    assert first is None, describe(first)


@contextlib.contextmanager
def float64():
    """Keras in float64: Input follows floatx, layers the global dtype policy."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


# The 18-, 34- and 50-layer variants hold every convention; deeper ones repeat the same blocks.
SHALLOW = [pytest.param(v, marks=repeat_marks(v)) for v in VARIANTS if C.unit_count(v) <= 16]


@pytest.mark.parametrize("case", SHALLOW, indirect=True, ids=lambda v: v.name)
def test_float64_matches_reference(case, record_property):
    """In float64 the model meets the reference at 1e-6 of each tap's scale, so a convention
    realised slightly wrong cannot hide in float32 roundoff."""
    v = case.v
    if keras.backend.backend() != "tensorflow":
        # keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE: off TensorFlow, Keras
        # promotes float64 with float64 to float32, so keras.ops.matmul rounds to float32.
        pytest.skip("Keras computes float64 in float64 on the TensorFlow backend only")
    with float64():  # built and run: some backends promote by the global floatx
        model = K.build(v)
        assert {w.dtype for w in model.weights} == {"float64"}
        K.load_params(v, model, case.params)
        got, want = case.run(33, model=model), expected(v, 2, 33)
    first, worst = compared(v, got, want, F64_RTOL)
    record_property("worst_ratio", worst)
    assert first is None, describe(first)


@pytest.mark.parametrize("case", SHALLOW, indirect=True, ids=lambda v: v.name)
def test_small_inputs(case):
    """keras.applications wants 32x32 at least; any size down to the variant's smallest runs
    (checked on the 18-, 34- and 50-layer variants)."""
    v = case.v
    size = C.min_input_size(v)
    got, want = case.run(size, batch=1), expected(v, 1, size)
    last = C.output_tap(v)  # logits, or a headless network's last tap
    assert got[last].shape == (1, *C.tap_shapes(v, size, size)[last])
    first, _ = compared(v, got, want)
    assert first is None, f"{size}x{size}: {describe(first)}"


def test_tap_selection():
    v = variants.get("torchvision/resnet18")
    model = K.build(v)
    x = weights.random_input(v, 1, 33, 33)
    assert list(K.run(v, model, x, "logits")) == ["logits"]
    chosen = ["stage1/unit1/shortcut", "stem/pool"]
    assert list(K.run(v, model, x, chosen)) == chosen
    with pytest.raises(EquivError, match="unknown tap"):
        K.run(v, model, x, ["stage9/unit1"])


# Descriptions no registered variant has, so that every field of the generic builder is used.
_SMALL = dict(widths=(8, 16, 16, 32), stem_width=8, num_classes=5)
SYNTHETIC = [
    variants.get("torchvision/resnet18").replace(
        name="test/basic_unscaled", bn_scale=False, conv_bias="all", bn_epsilon=1e-3,
        pool_padding="valid", stem_padding="tf_same", in_channels=1, **_SMALL),
    variants.get("slim/resnet_v2_50").replace(
        name="test/v2_first_unit", depths=(2, 1, 2, 1), stride_unit="first", stride_conv=3,
        projection="channels_or_stride", pool_pad_value="zero", pool_padding="symmetric",
        conv_padding="tf_same", **_SMALL),
    variants.get("torchvision/resnet18").replace(
        name="test/basic_preact", preact=True, stem_kernel=3, stem_stride=1, pool_kernel=2,
        pool_padding="tf_same", shortcut_norm=False, conv_bias="unnormalized", **_SMALL),
]


@pytest.mark.parametrize("v", SYNTHETIC, ids=lambda v: v.name)
@pytest.mark.parametrize("size", SIZES)
def test_generic_builder_realises_any_description(v, size):
    model = K.build(v)
    params = weights.random_params(v, 0)
    K.load_params(v, model, params)
    assert all(np.array_equal(a, params[k]) for k, a in K.export_params(v, model).items())
    got = K.run(v, model, weights.random_input(v, 2, size, size))
    first, _ = compared(v, got, expected(v, 2, size))
    assert first is None, describe(first)


# ---------------------------------------------------------------------------------------
# 4. Names, and the generic builder against keras.applications


def test_framework_names_are_the_models(case):
    names = K.framework_names(case.v)
    assert list(names) == list(C.param_shapes(case.v))
    assert sorted(names.values()) == sorted(w.path for w in case.model.weights)


# keras.applications has references for keras/ variants only
KERAS_APPS = [v for v in VARIANTS if v.framework == "keras"]


@pytest.mark.parametrize("case", KERAS_APPS, indirect=True, ids=lambda v: v.name)
def test_generic_matches_keras_applications(case):
    """equiv's generic Keras build vs keras.applications' model, with the same weights."""
    v = case.v
    assert type(case.model).__name__ == "Functional" and case.model.name == v.short_name.lower()
    generic = K.build(v, reference=False)
    # Same variables under the same paths in the same order, and the same weighted layers in
    # the same order, so that a .weights.h5 of either build loads into the other.
    assert [w.path for w in generic.weights] == [w.path for w in case.model.weights]
    assert ([(type(l).__name__, l.name) for l in generic.layers if l.weights]
            == [(type(l).__name__, l.name) for l in case.model.layers if l.weights])
    K.load_params(v, generic, case.params)
    ours, theirs = case.run(33, model=generic), case.taps(33)
    for tap in theirs:
        np.testing.assert_array_equal(ours[tap], theirs[tap], err_msg=tap)


def test_reference_build_refuses():
    with pytest.raises(FrameworkError, match="no keras reference"):
        K.build(variants.get("slim/resnet_v2_50"), reference=True)
    changed = variants.get("keras/ResNet50").replace(bn_epsilon=1e-3)
    with pytest.raises(FrameworkError, match="bn_epsilon"):
        K.build(changed)
    assert K.build(changed, reference=False).get_layer("conv1_bn").epsilon == 1e-3


def test_reference_takes_num_classes():
    v = variants.get("keras/ResNet50V2", num_classes=7)
    model = K.build(v)
    assert model.get_layer("predictions").units == 7
    assert K.run(v, model, np.zeros((1, 40, 40, 3), np.float32), "logits")["logits"].shape == (1, 7)


# ---------------------------------------------------------------------------------------
# 5. Negative controls: the comparison fails, and says where


@pytest.mark.parametrize("name", ["keras/ResNet50V2", "torchvision/resnet18"])
def test_perturbed_kernel_fails_at_its_layer(name):
    v = variants.get(name)
    params = weights.random_params(v, 0)
    layer = "stage2/unit1/conv2"
    params[f"{layer}/kernel"][0, 0, 0, 0] += 0.05
    model = K.build(v)
    K.load_params(v, model, params)
    got = K.run(v, model, weights.random_input(v, 2, 33, 33))
    first, _ = compared(v, got, expected(v, 2, 33))
    assert first is not None and first.name == layer and first.rel > 10 * first.tol, describe(first)


# A convention realised differently from the description fails first where it first acts.
CONVENTION_CONTROLS = [
    # DESIGN.md's slim/keras trap: SAME max-pool with -inf vs zero-padded VALID
    ("keras/ResNet50V2", {"pool_padding": "tf_same", "pool_pad_value": "-inf"}, 33, "stem/pool"),
    ("keras/ResNet50V2", {"pool_pad_value": "-inf"}, 32, "stem/pool"),
    ("keras/ResNet50", {"bn_epsilon": 1e-3}, 33, "stem/conv"),
    ("keras/ResNet50V2", {"bn_epsilon": 1e-3}, 33, "stage1/unit1/preact"),
    # TF SAME pads a stride-2 conv asymmetrically on even sizes (8 -> 4 at stage 2)
    ("torchvision/resnet18", {"conv_padding": "tf_same"}, 32, "stage2/unit1/conv1"),
    ("torchvision/resnet18", {"stem_padding": "tf_same"}, 32, "stem/conv"),
]


@pytest.mark.parametrize("name,change,size,tap", CONVENTION_CONTROLS,
                         ids=[f"{n}-{'+'.join(c)}-{s}" for n, c, s, _ in CONVENTION_CONTROLS])
def test_wrong_convention_fails_where_it_acts(name, change, size, tap):
    v = variants.get(name)
    model = K.build(v.replace(**change), reference=False)
    K.load_params(v, model, weights.random_params(v, 0))
    got = K.run(v, model, weights.random_input(v, 2, size, size))
    first, _ = compared(v, got, expected(v, 2, size))
    assert first is not None and first.name == tap, describe(first)


# ---------------------------------------------------------------------------------------
# Files


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, on the refused file
def test_reads_plain_keras_applications_file(tmp_path):
    """A file written by keras.applications itself (static 224x224 input, its own naming)."""
    v = variants.get("keras/ResNet50")
    plain = keras.applications.ResNet50(weights=None, classifier_activation=None)
    K.load_params(v, plain, weights.random_params(v, 0))  # distinct values everywhere
    path = tmp_path / "resnet50.weights.h5"
    plain.save_weights(path)
    read = K.read_file(v, path)
    exported = K.export_params(v, plain)
    assert list(read) == list(exported)
    for name in exported:
        assert np.array_equal(read[name], exported[name]), name
    # the wrong variant, or the wrong head: named in canonical terms, first misfit first
    with pytest.raises(ParamMismatchError, match="keras/ResNet50V2.*stage1/unit2/conv1/bn/gamma"):
        K.read_file(variants.get("keras/ResNet50V2"), path)
    with pytest.raises(ParamMismatchError, match=r"logits/kernel expected \(2048, 10\), found \(2048, 1000\)"):
        K.read_file(variants.get("keras/ResNet50", num_classes=10), path)


@pytest.mark.parametrize("name,reference", [("keras/ResNet50V2", False), ("torchvision/resnet18", None)])
def test_weights_file_round_trip(tmp_path, name, reference):
    """Generic builds write files that read back exactly (for keras/ variants, through the
    keras.applications model that read_file builds)."""
    v = variants.get(name)
    params = weights.random_params(v, 0)
    model = K.build(v, reference=reference)
    K.load_params(v, model, params)
    path = tmp_path / "model.weights.h5"
    K.write_file(v, model, path)
    read = K.read_file(v, path)
    assert all(np.array_equal(read[k], params[k]) for k in params)


def test_generic_model_saves_without_unsafe_layers(tmp_path):
    """The -inf padding is a registered layer, not a Lambda: a .keras file loads in safe mode."""
    v = variants.get("torchvision/resnet18")
    model = K.build(v)
    assert isinstance(model.get_layer("pool1_pad"), K.NegInfPadding2D)
    K.load_params(v, model, weights.random_params(v, 0))
    path = tmp_path / "resnet18.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = weights.random_input(v, 1, 33, 33)
    np.testing.assert_array_equal(K.run(v, loaded, x, "logits")["logits"],
                                  K.run(v, model, x, "logits")["logits"])
