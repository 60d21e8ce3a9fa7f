"""Fault classes a real port can make, planted in each backend's port and caught at their tap.

Each test names the code on both sides:

* the **good side** is a real reference, unfaulted, built natively with seeded weights:
  `tf_slim.nets` (slim/resnet_v1_50, slim/resnet_v2_50), `keras.applications` (keras/ResNet50),
  or torchvision's ResNet-50 code. torchvision does not import beside torch 2.13 here, so that
  side is tests/torchvision_layout.py's transcription of torchvision's resnet.py (a separate
  class from equiv's torch builder), read tap by tap through hooks below. Each reference is
  first shown equal to the float64 numpy reference at every tap;
* the **faulty side** is a port of those weights into one backend (every registered one:
  equiv.frameworks.FRAMEWORKS, so slim, keras, torch, onnx, and a new backend gets these tests too),
  with the fault living in that backend: either in its import (equiv.frameworks.<fw>'s
  `framework_names` or `load_params`, patched for the test, loading into the backend's real
  library build where the variant is native to it) or in the network that backend builds for
  a wrong description (its own builder: the real library cannot express the fault).

Every test asserts the first diverging tap exactly, the reason (a value, a shape, or NaN), and
that every tap before it agrees; where the faulty side is finite, it must also equal the
float64 numpy reference (equiv.reference) of the faulty network at every tap, so the plant is
the fault it claims to be and nothing else.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

from equiv import canonical as C
from equiv import compare
from equiv import reference as R
from equiv import report as report_text
from equiv import variants as V
from equiv import weights as W
from equiv.compare import Report
from equiv.errors import ParamMismatchError
from equiv.frameworks import FRAMEWORKS, adapter, loaded
from tests.torchvision_layout import torchvision_model, torchvision_taps

SIZE = 32  # 32x32, batch 1: the stages every fault here changes keep at least a 4x4 map
BACKENDS = list(FRAMEWORKS)  # the registry's: a new backend is planted with every fault below
TV = "torchvision/resnet50"
RESNEXT, RESNET_D = "torchvision/resnext50_32x4d", "timm/resnet50d"  # issue 16 A's negative controls


def _label(name: str) -> str:
    """The library code of a reference, for test ids."""
    known = {TV: "torchvision_resnet50", RESNEXT: "torchvision_resnext50_32x4d"}
    return known.get(name) or name.replace("slim/", "tf_slim_").replace("/", "_")


# ---------------------------------------------------------------------------------------
# The good side: a real reference, unfaulted


_MODELS: dict = {}  # (backend, variant) -> model, for this module's tests only (released after them)
_NUMPY: dict[str, dict[str, np.ndarray]] = {}  # the faulty network per numpy, once for the three backends


@pytest.fixture(scope="module", autouse=True)
def _release_models():
    yield
    for (fw, _), model in _MODELS.items():
        adapter(fw).release(model)
    _MODELS.clear()
    _NUMPY.clear()
    reference.cache_clear()


def built(fw: str, v):
    """One model of registered variant `v` in backend `fw` for all this module's tests (a
    ResNet-50 graph takes seconds to build): the real library where `v` is native to `fw`, else
    the backend's builder. Every load is strict and whole, so a model reused by another test
    keeps nothing of its last weights."""
    if (fw, v) not in _MODELS:
        model = adapter(fw).build(v)
        if fw == v.native == "slim":
            assert model.reference  # tf_slim.nets itself
        elif fw == v.native == "keras":
            assert model.name == v.short_name.lower()  # keras.applications' model
        _MODELS[fw, v] = model
    return _MODELS[fw, v]


def port_into(fw: str, v, params, x) -> dict[str, np.ndarray]:
    """Load `params` into `v` built in backend `fw` through the backend's import; run every tap.
    A registered description's model is kept for the next test; a changed one is built afresh."""
    ad = adapter(fw)
    if v.reference_differences():
        with loaded(fw, v, params, reference=False) as model:
            return ad.run(v, model, x)
    model = built(fw, v)
    ad.load_params(v, model, params)
    return ad.run(v, model, x)


@functools.cache
def reference(name: str):
    """(variant, seeded params, input, taps) of the real reference of `name`, unfaulted."""
    v = V.get(name)
    params = W.random_params(v, 0)
    x = W.random_input(v, 1, SIZE, SIZE)
    if name in (TV, RESNEXT):
        model = torchvision_model(v)
        adapter("torch").load_params(v, model, params)  # torchvision's own keys, strict
        return v, params, x, torchvision_taps(v, model, x)
    return v, params, x, port_into(v.native, v, params, x)  # tf_slim.nets or keras.applications itself


@pytest.mark.parametrize("name", ["slim/resnet_v1_50", "slim/resnet_v2_50", "keras/ResNet50", TV], ids=_label)
def test_each_real_reference_is_the_numpy_reference_at_every_tap(name):
    """tf_slim.nets, keras.applications and torchvision's code (transcribed, read through hooks)
    vs equiv.reference's float64 numpy forward of the registered description: the good side of
    every test below is right at every tap, not only before its fault."""
    v, params, x, taps = reference(name)
    exactly(f"reference {name}", v, params, x, taps)


# ---------------------------------------------------------------------------------------
# The faulty side: a port into one backend


def caught(good_name: str, fw: str, bad: dict[str, np.ndarray], first: str, status: str) -> Report:
    """Compare the faulty port's taps with the real reference's; assert the first diverging tap
    is `first`, for `status`, and that every tap before it agrees."""
    v, _, _, good = reference(good_name)
    taps = C.tap_names(v)
    results = compare.compare_taps({good_name: good, f"{fw} port": bad}, taps, compare.tap_tolerances(v))
    report = Report(kind="check", variant=good_name, frameworks=[good_name, f"{fw} port"], settings={},
                    tolerance=compare.tolerance("float32"), taps=results)
    got = report.first
    summary = f"{good_name} vs {fw} port: first divergence {got.name if got else None} ({got.status if got else ''})"
    assert got is not None, summary
    assert (got.name, got.status) == (first, status), summary
    before = results[:taps.index(first)]
    assert all(r.ok for r in before), [r.name for r in before if not r.ok]  # (none before stem/conv)
    if status == "diverged":
        assert got.rel > 10 * got.tol, (got.rel, got.tol)  # far beyond rounding, not marginal
    print(f"{good_name} | {fw} | {got.name} | {got.status} | rel {got.rel:.3g} max_abs {got.max_abs:.3g}")
    return report


def exactly(key: str, v, params, x, bad: dict[str, np.ndarray]) -> None:
    """The faulty side computes `v` with `params` (the faulty network), tap by tap, per numpy in float64."""
    if key not in _NUMPY:
        _NUMPY[key] = R.forward(v, params, x)
    want = _NUMPY[key]
    results = compare.compare_taps({"numpy": want, "port": bad}, C.tap_names(v), compare.tap_tolerances(v))
    wrong = [(r.name, r.status, r.rel) for r in results if not r.ok]
    assert not wrong, wrong[:3]


# ---------------------------------------------------------------------------------------
# Faults in a backend's import (its naming or its load): the real library build, wrong weights


def forget_load_op(model) -> None:
    """slim builds its assign ops once per model, from the names of that moment; Keras and torch
    look names up at every load."""
    getattr(model, "_cache", {}).pop("load", None)


def _swapped_bn_names(original):
    def framework_names(variant):
        names = dict(original(variant))
        for name in [n for n in names if n.endswith("/moving_mean")]:
            var = name.removesuffix("moving_mean") + "moving_variance"
            names[name], names[var] = names[var], names[name]
        return names
    return framework_names


# Where the variance swapped in is negative, the square root makes NaN. torch, Keras and ONNX Runtime
# carry it to the tap; slim's graph run returns 0 there after the ReLU (observed), so its first tap is a
# finite divergence and NaN shows only at the first BatchNorm without a ReLU (the projection's).
# A v2 network's first BatchNorm (the pre-activation) sees the max-pooled stem: positive means,
# so finite values, wrong. A backend not listed in OBSERVED (a new one) is held to the first tap, and to
# the status its own values give there (non-finite where NaN reaches the tap).
BN_SWAP_FIRST = {"slim/resnet_v1_50": "stem/conv", "slim/resnet_v2_50": "stage1/unit1/preact"}
OBSERVED = {("slim/resnet_v1_50", "slim"): "diverged", ("slim/resnet_v1_50", "keras"): "nonfinite",
            ("slim/resnet_v1_50", "torch"): "nonfinite", ("slim/resnet_v1_50", "onnx"): "nonfinite"}
BN_SWAP = [(good, fw, first, OBSERVED.get((good, fw), "diverged" if "v2" in good else None))
           for good, first in BN_SWAP_FIRST.items() for fw in BACKENDS]


@pytest.mark.parametrize("good_name, fw, first, status", BN_SWAP,
                         ids=[f"{_label(g)}-{fw}" for g, fw, _, _ in BN_SWAP])
def test_swapped_bn_mean_and_variance_in_an_import_is_caught_at_the_first_batchnorm(good_name, fw, first, status,
                                                                                   monkeypatch):
    """tf_slim.nets resnet_v1_50 / resnet_v2_50 (real) vs the same weights imported into `fw`
    (tf_slim.nets itself for slim, the backend's builder otherwise) by an import whose naming
    maps moving_mean to the variance variable and back. A round trip through that import is
    bit-exact, so only a cross-framework check sees it. The report names the first BatchNorm's
    tap in its summary, as "non-finite" where NaN reaches that tap, else as a divergence
    (followed by where NaN first shows, if it does)."""
    v, params, x, _ = reference(good_name)
    ad = adapter(fw)
    monkeypatch.setattr(ad, "framework_names", _swapped_bn_names(ad.framework_names))
    from equiv import families

    own = getattr(families.builder(v, fw), "module_names", None)
    if own is not None:  # the names of the module equiv built itself (torch: torchvision's scheme)
        monkeypatch.setattr(families.builder(v, fw), "module_names", _swapped_bn_names(own))
    model = built(fw, v)
    forget_load_op(model)  # slim's load op holds the names it was made with: make it with the swapped ones
    try:
        ad.load_params(v, model, params)
        assert all(np.array_equal(params[k], a) for k, a in ad.export_params(v, model).items())  # round trip
        bad = ad.run(v, model, x)
    finally:
        forget_load_op(model)
    if status is None:  # a backend without an observation: the status its values give at the first tap
        status = "diverged" if np.isfinite(bad[first]).all() else "nonfinite"
    report = caught(good_name, fw, bad, first, status)
    summary = report_text.summary_lines(report)[0]
    assert re.search(r"at tap (\S+)", summary).group(1) == first, summary
    if status == "nonfinite":
        assert report.status == "non-finite" and summary.startswith("NON-FINITE")
        assert report.first.nonfinite[0] == 0 and report.first.nonfinite[1] > 0  # NaN on the port's side only
    elif report.nonfinite:
        assert summary.startswith("NOT EQUIVALENT, then NON-FINITE"), summary
    print(summary)


def _loading(ad, change):
    """The backend's load_params, with `change(variant, params)` applied to what it loads."""
    original = ad.load_params

    def load_params(variant, model, params):
        return original(variant, model, change(variant, dict(params)))
    return load_params


def _bgr_stem(v, params):
    params["stem/conv/kernel"] = np.ascontiguousarray(params["stem/conv/kernel"][:, :, ::-1, :])
    return params


@pytest.mark.parametrize("fw", BACKENDS)
def test_rgb_bgr_swap_in_an_import_is_caught_at_the_stem_conv(fw, monkeypatch):
    """keras.applications ResNet50 (real) vs its weights imported into `fw` (keras.applications
    itself for keras) by an import that reverses the stem kernel's input channels (the same as
    feeding BGR where RGB is meant): caught at stem/conv, the first tap."""
    v, params, x, _ = reference("keras/ResNet50")
    ad = adapter(fw)
    monkeypatch.setattr(ad, "load_params", _loading(ad, _bgr_stem))
    bad = port_into(fw, v, params, x)
    caught("keras/ResNet50", fw, bad, "stem/conv", "diverged")
    exactly("bgr", v, params, x[..., ::-1], bad)  # the port is the reference fed BGR


def _shortcut_bn_left_at_init(v, params):
    for name in [n for n in params if "/shortcut/bn/" in n]:
        init = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0}[name.rsplit("/", 1)[1]]
        params[name] = np.full_like(params[name], init)
    return params


@pytest.mark.parametrize("fw", BACKENDS)
def test_missing_shortcut_norm_in_an_import_is_caught_at_the_first_projection(fw, monkeypatch):
    """keras.applications ResNet50 (real) vs its weights imported into `fw` (keras.applications
    itself for keras) by an import that never finds the projection's BatchNorm, which keeps the
    framework's initial values (mean 0, variance 1, gamma 1, beta 0): the projection is
    un-normalised, as if the network had no shortcut norm. Caught at stage1/unit1/shortcut,
    the first projection."""
    v, params, x, _ = reference("keras/ResNet50")
    ad = adapter(fw)
    monkeypatch.setattr(ad, "load_params", _loading(ad, _shortcut_bn_left_at_init))
    bad = port_into(fw, v, params, x)
    caught("keras/ResNet50", fw, bad, "stage1/unit1/shortcut", "diverged")
    # within float32 rounding of the network without a shortcut norm (variance 1 scales by 1/sqrt(1 + eps))
    exactly("shortcut_bn", v.replace(shortcut_norm=False), params, x, bad)


# ---------------------------------------------------------------------------------------
# Faults in the network a backend builds: the description the port realises is wrong


def _with_new_layers(v, params, seed=1):
    """`params` completed for `v`: a layer the source lacks gets a He-scaled kernel drawn fresh and
    a BatchNorm at its initial values, as a target's initialiser leaves an unmatched layer."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in C.param_shapes(v).items():
        if name in params:
            out[name] = params[name]
        elif name.endswith("/kernel"):
            out[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))).astype(np.float32)
        else:
            init = 1.0 if name.rsplit("/", 1)[1] in ("gamma", "moving_variance") else 0.0
            out[name] = np.full(shape, init, np.float32)
    return out


STRUCTURAL = {
    # id: (real reference, what the port's description gets wrong, the first tap it changes, how)
    "stride_in_first_not_last_unit": (
        "slim/resnet_v1_50", {"stride_unit": "first"}, "stage1/unit1/shortcut", "shape"),
    # keras' first unit projects, so its strided projection is the first tap the move changes
    "stride_in_last_not_first_unit": (
        "keras/ResNet50", {"stride_unit": "last"}, "stage2/unit1/shortcut", "shape"),
    # V1 (stride on the first 1x1) ported as V1.5 (on the 3x3), and back
    "v1_as_v1.5": ("keras/ResNet50", {"stride_conv": 2}, "stage2/unit1/conv1", "shape"),
    "v1.5_as_v1": (TV, {"stride_conv": 1}, "stage2/unit1/conv1", "shape"),
    # the first identity shortcut of a v2 network: unit 1 of stage 1 projects
    "identity_from_preact_not_input": (
        "slim/resnet_v2_50", {"identity_from": "preact"}, "stage1/unit2/shortcut", "diverged"),
    # slim v1 subsamples the identity of the strided last unit (a 1x1 max-pool of stride 2);
    # torchvision's rule projects there
    "projection_not_strided_slice": (
        "slim/resnet_v1_50", {"projection": "channels_or_stride"}, "stage1/unit3/shortcut", "diverged"),
}


# CI budget: onnx (added after the three first backends) runs two of these six in the default suite, one
# moving a stride (caught by shape) and one by value; its other four are `slow` (`-m slow` runs them; all
# pass). Its builder realises every description field these change (tests/frameworks/test_onnx.py).
ONNX_DEFAULT = {"v1.5_as_v1", "identity_from_preact_not_input"}
STRUCTURAL_CASES = [pytest.param(fault, fw, marks=[pytest.mark.slow] if fw == "onnx" and fault not in ONNX_DEFAULT
                                 else [], id=f"{_label(STRUCTURAL[fault][0])}-{fault}-{fw}")
                    for fault in STRUCTURAL for fw in BACKENDS]


@pytest.mark.parametrize("fault, fw", STRUCTURAL_CASES)
def test_a_port_that_builds_the_wrong_network_is_caught_at_the_first_changed_tap(fault, fw):
    """The real reference (tf_slim.nets, keras.applications or torchvision's code, unfaulted) vs
    its weights ported into `fw`, whose builder realises a description with one convention
    wrong: stride in the wrong unit, V1 for V1.5 and back, the identity taken after the
    pre-activation, a projection where a strided slice is meant (its new layer initialised
    fresh). Caught at the first tap the convention changes: by shape where it moves a stride,
    by value otherwise."""
    good_name, change, first, status = STRUCTURAL[fault]
    v, params, x, _ = reference(good_name)
    wrong = v.replace(**change)
    assert wrong.reference_differences() == sorted(change)  # no library computes it: the builder does
    ported = _with_new_layers(wrong, params)
    bad = port_into(fw, wrong, ported, x)
    caught(good_name, fw, bad, first, status)
    exactly(fault, wrong, ported, x, bad)


# ---------------------------------------------------------------------------------------
# Issue 16 A: ResNeXt's groups and ResNet-D's average-pool shortcut, each got wrong by a port


def _tiled_dense(v, wrong, params):
    """`params` of ResNeXt `v` for `wrong` (groups=1): each grouped 3x3 kernel (3, 3, width / groups,
    width) tiled across the groups into a dense (3, 3, width, width) one, as a port that fits the
    stored kernel to an ungrouped conv by repeating it would (a block-diagonal kernel would be exact)."""
    shapes = C.param_shapes(wrong)
    return {n: np.ascontiguousarray(np.tile(a, (1, 1, shapes[n][2] // a.shape[2], 1))) if a.shape != shapes[n] else a
            for n, a in params.items()}


# Issue 16 A's controls build a whole ResNet-50 graph per backend: slim's (15-17 s each here) carry the slow
# marker, to keep CI within its budget (`-m ""` runs them; both pass).
NEW_CONTROL_BACKENDS = [pytest.param(fw, marks=[pytest.mark.slow] if fw == "slim" else []) for fw in BACKENDS]


@pytest.mark.parametrize("fw", NEW_CONTROL_BACKENDS)
def test_a_resnext_ported_without_groups_is_caught_at_its_first_grouped_conv(fw):
    """torchvision's resnext50_32x4d (real where torchvision imports, else tvcopy, the verbatim copy; its
    own forward through hooks) vs its weights ported into `fw` by a port that builds the 3x3 convs with
    groups=1 (the backend's builder: no library computes it). A strict load refuses the grouped kernels
    outright (shape (3, 3, 4, 128) where (3, 3, 128, 128) is needed); tiled to fit, they load, and the
    check names stage1/unit1/conv2, the first grouped conv, with every tap before it equal."""
    v, params, x, _ = reference(RESNEXT)
    wrong = v.replace(groups=1)
    assert wrong.reference_differences() == ["groups"]
    with pytest.raises(ParamMismatchError, match=r"stage1/unit1/conv2/kernel expected \(3, 3, 128, 128\), "
                                                 r"found \(3, 3, 4, 128\)"):
        C.check_params(wrong, params)
    ported = _tiled_dense(v, wrong, params)
    bad = port_into(fw, wrong, ported, x)
    caught(RESNEXT, fw, bad, "stage1/unit1/conv2", "diverged")
    exactly("resnext_groups_1", wrong, ported, x, bad)


def _max_down(x, stride, kernel=2):
    """A ResNet-D shortcut pooled by max instead of mean: the same windows (reference.avg_down's),
    the maximum of each window's elements inside the input."""
    n, m = x.shape[1:3]
    oh, ow = -(-n // stride), -(-m // stride)
    pad = ((0, 0), (0, max((oh - 1) * stride + kernel - n, 0)), (0, max((ow - 1) * stride + kernel - m, 0)), (0, 0))
    return R._windows(np.pad(x, pad, constant_values=-np.inf), kernel, stride).max(axis=(4, 5))[:, :oh, :ow]


def _torch_max_pool(monkeypatch):
    from equiv.families.resnet import torch as builder

    monkeypatch.setattr(builder.nn, "AvgPool2d", lambda k, s, ceil_mode, count_include_pad:
                        builder.nn.MaxPool2d(k, s, ceil_mode=ceil_mode))


def _keras_max_pool(monkeypatch):
    from equiv.families.resnet import keras as builder

    monkeypatch.setattr(builder.keras.layers, "AveragePooling2D", builder.keras.layers.MaxPooling2D)


def _slim_max_pool(monkeypatch):
    from equiv.frameworks.slim import _libs

    slim = _libs()[1]
    monkeypatch.setattr(slim, "avg_pool2d", slim.max_pool2d)


def _onnx_max_pool(monkeypatch):
    """In the graph the onnx backend writes: each AveragePool that leaves its padding uncounted (the
    ResNet-D shortcut's; a head's average counts none) written as a MaxPool of the same windows and
    pads (ONNX's MaxPool pads with -inf)."""
    from equiv.frameworks import onnx as backend

    original = backend.Graph.op

    def op(self, kind, inputs, hint, out=None, **attrs):
        if kind == "AveragePool" and "count_include_pad" in attrs:
            attrs.pop("count_include_pad")
            kind = "MaxPool"
        return original(self, kind, inputs, hint, out, **attrs)
    monkeypatch.setattr(backend.Graph, "op", op)


# Each backend's build with its ResNet-D shortcut pool made a max-pool of the same windows (torch:
# MaxPool2d(2, s, ceil_mode=True); Keras: MaxPooling2D(2, s, "same"); slim: max_pool2d(2, s, "SAME");
# onnx: MaxPool with the AveragePool's pads), each padding with -inf where the average pool counts no
# padding. A registered backend missing here fails its test (it is not skipped): plant it in its build.
MAX_POOL_PLANTS = {"torch": _torch_max_pool, "keras": _keras_max_pool, "slim": _slim_max_pool, "onnx": _onnx_max_pool}


def _max_pool_shortcut(fw, monkeypatch):
    """Plant the fault in backend `fw`'s build (MAX_POOL_PLANTS)."""
    if fw not in MAX_POOL_PLANTS:
        pytest.fail(f"backend {fw} has no planted max-pool ResNet-D shortcut: add its plant to MAX_POOL_PLANTS")
    MAX_POOL_PLANTS[fw](monkeypatch)


@pytest.mark.parametrize("fw", NEW_CONTROL_BACKENDS)
def test_a_resnet_d_shortcut_pooled_by_max_is_caught_at_the_first_pooled_shortcut(fw, monkeypatch):
    """timm's resnet50d, as equiv's torch module builds it in timm's layout (tests/test_torchvision.py: bit
    for bit real timm's, which does not import beside the pinned torch), vs its weights in `fw`, whose
    build pools the ResNet-D shortcut by max instead of mean. Stage 1 does not downsample (its pool is an
    identity), so the check names stage2/unit1/shortcut, the first pooled projection, every tap before it
    equal; the faulty side is, tap by tap, the float64 reference with that max-pool."""
    from equiv.families.resnet import reference as resnet_reference

    v, params, x, _ = reference(RESNET_D)
    _max_pool_shortcut(fw, monkeypatch)
    ad = adapter(fw)
    with loaded(fw, v, params) as model:  # built afresh, with the planted pool
        bad = ad.run(v, model, x)
    caught(RESNET_D, fw, bad, "stage2/unit1/shortcut", "diverged")
    monkeypatch.setattr(resnet_reference, "avg_down", _max_down)
    exactly("resnet_d_max_pool", v, params, x, bad)
