"""The PyTorch adapter against the numpy reference, torchvision's layout (real or the verbatim copy,
named in the test ids), and itself.

Every registered variant (and three small synthetic ones that exercise conventions no
registered variant uses) is built once per module by the `case` fixture; pytest groups the
tests by it, so only one large model is alive at a time.
"""

from __future__ import annotations

import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn

from equiv import canonical as C
from equiv import compare, reference, variants, weights
from equiv.errors import EquivError, FrameworkError, ParamMismatchError
from equiv.families.resnet import plan as P
from equiv.families.resnet.description import ResNet
from equiv.families.vgg.description import VGG
from equiv.frameworks import torch as adapter
from tests.contract import repeat_marks

RTOL = 1e-5  # of the tap's scale, max|reference tap|

# Conventions the registry does not (yet) use, on networks small enough to be cheap.
SYNTHETIC = [
    ResNet(  # TF SAME everywhere it can be, an even stem kernel, unscaled BatchNorm, VALID pool
        name="synthetic/tf_same_unscaled", native="slim", description="test only",
        block="bottleneck", depths=(2, 2), widths=(4, 8), strides=(2, 2), preact=False,
        stride_unit="last", stride_conv=2, projection="channels", shortcut_norm=True,
        conv_bias="all", conv_padding="tf_same", bn_epsilon=1e-3, bn_scale=False,
        stem_width=8, stem_kernel=4, stem_padding="tf_same", pool_padding="valid", num_classes=10,
    ),
    ResNet(  # pre-activation basic blocks, one input channel, an even (asymmetric) -inf pool
        name="synthetic/basic_v2", native="keras", description="test only",
        block="basic", depths=(2, 2), widths=(8, 16), strides=(1, 2), preact=True,
        stride_unit="first", stride_conv=1, projection="channels_or_stride", shortcut_norm=False,
        conv_bias="unnormalized", conv_padding="tf_same", bn_epsilon=1e-3, bn_scale=False,
        stem_width=8, stem_kernel=3, stem_stride=1, pool_kernel=2, pool_padding="symmetric",
        in_channels=1, num_classes=5,
    ),
    ResNet(  # v1 basic blocks with strided identity shortcuts, a projection without BatchNorm
        name="synthetic/basic_v1_identity", native="torch", description="test only",
        block="basic", depths=(2, 2), widths=(8, 16), strides=(2, 2), preact=False,
        stride_unit="last", stride_conv=2, projection="channels", shortcut_norm=False,
        conv_bias="all", conv_padding="symmetric", bn_epsilon=2e-5, stem_kernel=4, stem_width=8,
        pool_padding="symmetric", pool_pad_value="zero", num_classes=7,
    ),
]
# The ResNets that take any input size (the seed's 224x224-only ones: tests/test_seed.py); these
# tests read ResNet fields (other families have their own tests under tests/families/)
ALL = [v for v in variants.all_variants() if v.family == "resnet" and v.input_size is None] + SYNTHETIC
SMALL = variants.get("torchvision/resnet18")

# Layers that must pad themselves (F.pad): every other layer pads through its own argument.
PADDED_LAYERS = {
    "synthetic/tf_same_unscaled": {"conv1", "layer1.1.conv2", "layer2.1.conv2"},
    "synthetic/basic_v2": {"maxpool", "layer2.0.conv1"},
    "synthetic/basic_v1_identity": {"conv1", "maxpool"},
    "seed/slim_resnet_v2_demo": set(),  # a VALID pool, and slim's symmetric conv2d_same
    "seed/slim_resnet_v2_50": set(),
    # issue 16 B (equiv's module; timm and transformers do not import here): zero-padded pools
    "timm/resnetv2_50": set(), "timm/resnetv2_50x1_bit": {"maxpool"},
    "hf/resnet-50": set(), "hf/resnet-50-features": set(),
    "keras_hub/resnet_50": {"maxpool"}, "keras_hub/resnet_v2_50": set(),
}


class Case:
    def __init__(self, v: ResNet):
        self.v = v
        self.params = weights.random_params(v, 0)
        self.model = adapter.build(v)
        adapter.load_params(v, self.model, self.params)


@pytest.fixture(scope="module", params=[pytest.param(v, marks=repeat_marks(v)) for v in ALL],
                ids=[v.name for v in ALL])
def case(request) -> Case:
    return Case(request.param)


def tap_error(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |out - ref|, max |ref|)"""
    return float(np.abs(out - ref).max()), float(np.abs(ref).max())


def check_against_reference(v: ResNet, params, x, out) -> float:
    """Assert every tap agrees with the float64 reference within equiv's own per-tap
    tolerance (float32 rounding grows with depth: compare.tap_tolerances); return the worst
    error / scale."""
    ref = reference.forward(v, params, x)
    tol = compare.tap_tolerances(v)
    worst = 0.0
    for name in C.tap_names(v):
        assert out[name].shape == ref[name].shape, name
        assert out[name].dtype == np.float32, name
        err, scale = tap_error(out[name], ref[name])
        bound = tol[name] * scale
        assert err <= bound, f"{v.name} {name}: max error {err:.3g} exceeds {bound:.3g} (scale {scale:.3g})"
        worst = max(worst, err / scale)
    return worst


def first_mismatch(v: ResNet, out, ref) -> str | None:
    for name in C.tap_names(v):
        if out[name].shape != ref[name].shape:
            return name
        err, scale = tap_error(out[name], ref[name])
        if err > RTOL * scale:
            return name
    return None


def test_available():
    assert adapter.available() is None
    assert adapter.torch is torch  # the real torch, not the adapter module itself


def test_unavailable_without_torch():
    """Without torch the adapter still imports and says why, instead of raising."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from equiv.frameworks import torch as a; print(a.available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).parents[2]).stdout
    assert out.startswith("torch is not installed")


# ---------------------------------------------------------------------------------------
# 1. every tap against the reference


@pytest.mark.parametrize("size", [33, 32])
def test_taps_match_reference(case, size):
    x = weights.random_input(case.v, 2, size, size)
    out = adapter.run(case.v, case.model, x)
    assert list(out) == C.tap_names(case.v)
    worst = check_against_reference(case.v, case.params, x, out)
    print(f"{case.v.name} {size}x{size}: worst tap error {worst:.2e} of scale")


def test_any_size_and_batch(case):
    """Smallest usable input, not square, batch 1: every layer's spatial size as planned."""
    v = case.v
    h, w = C.min_input_size(v), C.min_input_size(v) + 3
    spatial = [P.stem(v).name, "stem/pool", *(f"stage{s}/unit{d}" for s, d in enumerate(v.depths, start=1))]
    last = C.output_tap(v)  # logits, or a headless network's last tap
    out = adapter.run(v, case.model, weights.random_input(v, 1, h, w), list(dict.fromkeys([*spatial, last])))
    sizes = zip(P.spatial_sizes(v, h), P.spatial_sizes(v, w), strict=True)
    for name, (sh, sw) in zip(spatial, sizes, strict=True):
        assert out[name].shape[1:3] == (sh, sw), name
    assert out[last].shape == (1, *C.tap_shapes(v, h, w)[last]) and np.isfinite(out[last]).all()


def test_run_selects_taps():
    v = SMALL
    model = adapter.build(v)
    x = weights.random_input(v, 1, 33, 33)
    assert list(adapter.run(v, model, x, "logits")) == ["logits"]
    picked = adapter.run(v, model, x, ["logits", "stem/pool"])
    assert list(picked) == ["logits", "stem/pool"]
    assert picked["stem/pool"].shape[-1] == v.stem_width  # NHWC
    with pytest.raises(EquivError, match="unknown tap"):
        adapter.run(v, model, x, ["stage9/unit1"])


# ---------------------------------------------------------------------------------------
# Names, layout and structure


def test_framework_names_are_the_state_dict(case):
    """framework_names covers the state_dict exactly (num_batches_tracked aside), and each
    tensor has the canonical shape in torch's layout."""
    names = adapter.state_dict_keys(case.v, case.model)  # framework_names, or equiv's own module's
    state = case.model.state_dict()
    assert sorted(names.values()) == sorted(k for k in state if not k.endswith(".num_batches_tracked"))
    for name, shape in C.param_shapes(case.v).items():
        if name == "logits/kernel":
            shape = shape[::-1] + ((1, 1) if case.v.head == "conv" else ())  # a 1x1-conv head
        elif name.endswith("/kernel"):
            shape = (shape[3], shape[2], shape[0], shape[1])
        assert tuple(state[names[name]].shape) == shape, name
    if not case.v.bn_scale:
        assert not any(k.endswith(("bn1.weight", "postnorm.weight", "preact.weight")) for k in state)


def test_pads_explicitly_only_where_needed(case):
    padded = {n for n, m in case.model.named_modules()
              if isinstance(m, (adapter.PaddedConv2d, adapter.PaddedMaxPool2d))}
    # slim pools TF SAME and keras zero-pads its pool; neither pads a conv asymmetrically
    expected = {"torchvision": set(), "timm": set(), "slim": {"maxpool"}, "keras": {"maxpool"}}
    assert padded == PADDED_LAYERS.get(case.v.name, expected.get(case.v.framework))  # a variant's own first


# the synthetic variants hold every kind of explicit padding
@pytest.mark.parametrize("name", ["torchvision/resnet18", *(v.name for v in SYNTHETIC)])
def test_channels_last_agrees(name):
    v = next(v for v in ALL if v.name == name)
    model = adapter.build(v)
    adapter.load_params(v, model, weights.random_params(v, 0))
    x = weights.random_input(v, 2, 33, 33)
    base = adapter.run(v, model, x)
    out = adapter.run(v, model, x, channels_last=True)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for tap in base:
        err, scale = tap_error(out[tap], base[tap])
        assert err <= RTOL * scale, tap


# ---------------------------------------------------------------------------------------
# 4. torchvision's layout. torchvision_model() is the real torchvision.models.resnetNN where torchvision
# imports, else the verbatim copy of torchvision 0.29.1's resnet.py (tests/torchvision_resnet.py): the
# test ids say which (IMPL: "tvcopy", or "torchvision-0.29.1"). The pinned torch 2.13.0 has no working
# torchvision, so the default suite runs the copy; real torchvision runs in tests/test_torchvision.py,
# in the CI torchvision stage.

from tests.torchvision_layout import IMPL, torchvision_model  # noqa: E402

# reference=True builds a library's network: for torch, only variants native to torch that name one
TORCH_REFERENCE = [v for v in ALL if v.native == "torch" and v.built_by()]  # timm/: only where timm imports
NO_TORCH_REFERENCE = [v for v in ALL if v not in TORCH_REFERENCE]


def _unit_outputs(model: nn.Module, v: ResNet, x: np.ndarray) -> dict[str, np.ndarray]:
    """stem/pool, every unit and logits of a torchvision-layout model, through forward hooks."""
    out, hooks = {}, []

    def keep(name):
        def hook(module, inputs, output):
            out[name] = C.nchw_to_nhwc(output.detach().numpy().copy())
        return hook

    hooks.append(model.maxpool.register_forward_hook(keep("stem/pool")))
    for unit in P.units(v):
        block = getattr(model, f"layer{unit.stage}")[unit.index - 1]
        hooks.append(block.register_forward_hook(keep(unit.name)))
    with torch.inference_mode():
        out["logits"] = model(torch.from_numpy(C.nhwc_to_nchw(x))).numpy()
    for h in hooks:
        h.remove()
    return out


def _layout(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(t.shape), t.dtype) for k, t in model.state_dict().items()]


@pytest.mark.parametrize("v", NO_TORCH_REFERENCE, ids=[v.name for v in NO_TORCH_REFERENCE])
def test_reference_flag_is_refused_without_a_torch_reference(v):
    with pytest.raises(FrameworkError, match="no torch reference"):
        adapter.build(v, reference=True)


@pytest.mark.parametrize("case", [pytest.param(v, marks=repeat_marks(v)) for v in TORCH_REFERENCE], indirect=True,
                         ids=[v.name for v in TORCH_REFERENCE])
def test_reference_flag_builds_the_same_class_roundtrip(case):
    """build(reference=True) of a torchvision/ variant is equiv's generic ResNet class again (torchvision
    does not import beside torch 2.13; the seed's network, whose reference is its own code, is
    tests/test_seed.py's): two instances of one class, the same weights, identical taps. Plumbing."""
    v = case.v
    ref = adapter.build(v, reference=True)
    assert type(ref) is type(case.model)
    adapter.load_params(v, ref, case.params)
    x = weights.random_input(v, 2, 33, 33)
    ours, again = adapter.run(v, case.model, x), adapter.run(v, ref, x)
    assert all(np.array_equal(ours[n], again[n]) for n in ours)


TV_CASES = [v for v in ALL if v.framework == "torchvision"]


@pytest.mark.parametrize("case", [pytest.param(v, marks=repeat_marks(v)) for v in TV_CASES], indirect=True,
                         ids=[f"{v.name}-vs-{IMPL}" for v in TV_CASES])
def test_equiv_torch_module_against_torchvision_layout(case):
    """equiv torch module vs torchvision's resnetNN (IMPL in the id: real torchvision, or tvcopy, the
    verbatim copy): the same keys in the same order, shapes and dtypes, a strict load, and the same
    function, unit by unit through hooks on torchvision's own blocks."""
    v = case.v
    tv = torchvision_model(v)
    assert _layout(case.model) == _layout(tv), f"{v.name}: equiv torch module vs {IMPL}"
    assert set(adapter.framework_names(v).values()) == {
        k for k in tv.state_dict() if not k.endswith(".num_batches_tracked")}
    tv.load_state_dict(case.model.state_dict(), strict=True)
    x = weights.random_input(v, 2, 33, 33)
    ours = adapter.run(v, case.model, x)
    for name, t in _unit_outputs(tv, v, x).items():
        err, scale = tap_error(ours[name], t)
        assert err <= RTOL * scale, f"{v.name} {name}: equiv torch module vs {IMPL}: max error {err:.3g}"


@pytest.mark.parametrize("impl", [IMPL])
def test_reads_a_torchvision_state_dict(tmp_path, impl):
    """A state_dict saved from torchvision's resnet18 (`impl`: real torchvision or tvcopy), its
    num_batches_tracked and all, reads as the canonical parameters equiv's export gives for the same
    weights loaded into equiv's module."""
    v = variants.get("torchvision/resnet18")
    tv = torchvision_model(v)
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):  # make the statistics differ from the defaults
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(7)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    params = adapter.read_file(v, path)
    model = adapter.build(v)
    model.load_state_dict(tv.state_dict(), strict=True)
    exported = adapter.export_params(v, model)
    assert list(params) == list(exported)
    assert all(np.array_equal(params[n], exported[n]) for n in params)


@pytest.mark.parametrize("name, entries, batch_counters", [
    ("torchvision/resnet18", 122, 20), ("torchvision/resnet50", 320, 53),
])
def test_torchvision_state_dict_counts(name, entries, batch_counters):
    # resnet18: 20 convs (1 + 8x2 + 3 downsample) and 20 BatchNorms of 5 entries, fc 2;
    # resnet50: 53 convs (1 + 16x3 + 4 downsample) and 53 BatchNorms, fc 2.
    keys = list(adapter.build(variants.get(name)).state_dict())
    assert len(keys) == entries
    assert sum(k.endswith(".num_batches_tracked") for k in keys) == batch_counters
    assert keys[:2] == ["conv1.weight", "bn1.weight"] and keys[-2:] == ["fc.weight", "fc.bias"]
    assert "layer2.0.downsample.0.weight" in keys and "layer2.1.downsample.0.weight" not in keys


# Loading into real torchvision.models, unit by unit and tap by tap: tests/test_torchvision.py.


# ---------------------------------------------------------------------------------------
# state_dict files


# A small torchvision-style VGG with BatchNorm and a flatten of a 3x2 map
VGG_SMALL = VGG(name="hypothesis/vgg_small", native="torch", description="a small torchvision-style VGG",
                convs=(2, 1), widths=(4, 6), batch_norm=True, fc_widths=(10, 8), adaptive_pool=(3, 2), num_classes=5)


@pytest.mark.parametrize("name", ["torchvision/resnet18", "synthetic/tf_same_unscaled", "synthetic/basic_v2",
                                  "timm/resnet50d", "hypothesis/vgg_small"])
def test_state_dict_file_round_trip(name, tmp_path):
    """The file is written from the params (no module built); a module built and loaded with them
    holds the same state_dict, key for key and bit for bit."""
    v = next(v for v in [*ALL, VGG_SMALL] if v.name == name)
    params = weights.random_params(v, 1)
    model = adapter.build(v)
    adapter.load_params(v, model, params)
    path = tmp_path / "model.pth"
    adapter.write_file(v, params, path)
    written, held = torch.load(path, weights_only=True), model.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in written)
    assert set(written) == set(held)
    assert all(torch.equal(written[k], held[k]) for k in held)
    back = adapter.read_file(v, path)
    assert list(back) == list(C.param_shapes(v))
    assert all(np.array_equal(back[n], params[n]) for n in params)


def test_read_state_dict_is_strict(tmp_path):
    v = variants.get("torchvision/resnet18")
    state = adapter.build(v).state_dict()
    path = tmp_path / "extra.pth"
    torch.save({**state, "fc.extra": torch.zeros(3)}, path)
    with pytest.raises(ParamMismatchError) as e:
        adapter.read_file(v, path)
    assert e.value.unexpected == ["fc.extra"] and e.value.source == str(path)

    del state["layer1.0.bn2.running_var"]
    torch.save(state, path)
    with pytest.raises(ParamMismatchError) as e:
        adapter.read_file(v, path)
    assert e.value.missing == ["stage1/unit1/conv2/bn/moving_variance"]

    # another head: reported in canonical names and layout
    torch.save(adapter.build(variants.get(v.name, num_classes=10)).state_dict(), path)
    with pytest.raises(ParamMismatchError) as e:
        adapter.read_file(v, path)
    assert e.value.mismatched == [("logits/kernel", (512, 1000), (512, 10)), ("logits/bias", (1000,), (10,))]


class _Payload:
    unpickled = False

    def __setstate__(self, state):
        _Payload.unpickled = True


def test_read_state_dict_never_unpickles_objects(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Payload()}, f, protocol=2)
    torch.save({"conv1.weight": _Payload()}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(EquivError, match="weights_only"):
            adapter.read_file(variants.get("torchvision/resnet18"), p)
    assert not _Payload.unpickled


# ---------------------------------------------------------------------------------------
# 5. negative controls: the comparison fails, and fails where the fault is




@pytest.mark.parametrize("layer", ["stem/conv", "stage2/unit1/conv2", "stage3/unit1/shortcut", "stage4/unit2/conv1"])
def test_a_perturbed_kernel_is_found_at_its_layer(layer):
    params = weights.random_params(SMALL, 0)
    x = weights.random_input(SMALL, 2, 32, 32)
    bad = dict(params)
    kernel = bad[f"{layer}/kernel"].copy()
    centre = kernel.shape[0] // 2  # a corner may see only padding, one channel only zeros
    kernel[centre, centre] += 0.05
    bad[f"{layer}/kernel"] = kernel
    model = adapter.build(SMALL)
    adapter.load_params(SMALL, model, bad)
    assert first_mismatch(SMALL, adapter.run(SMALL, model, x), reference.forward(SMALL, params, x)) == layer


@pytest.mark.parametrize("change, size, first", [
    ({"conv_padding": "tf_same"}, 32, "stage2/unit1/conv1"),  # asymmetric on even sizes only
    ({"bn_epsilon": 1e-3}, 33, "stem/conv"),
    ({"stride_conv": 2}, 33, "stage2/unit1/conv1"),  # the stride on the wrong conv
    ({"pool_padding": "tf_same"}, 33, None),  # TF SAME is symmetric on odd sizes ...
    ({"pool_padding": "tf_same"}, 32, "stem/pool"),  # ... but not on even ones
])
def test_a_wrong_convention_is_found_where_it_acts(change, size, first):
    params = weights.random_params(SMALL, 0)
    x = weights.random_input(SMALL, 2, size, size)
    wrong = SMALL.replace(**change)
    model = adapter.build(wrong)
    adapter.load_params(wrong, model, params)
    assert first_mismatch(SMALL, adapter.run(wrong, model, x), reference.forward(SMALL, params, x)) == first


def test_zero_and_inf_pool_padding_differ_without_relu():
    """Before a v2 pool (no ReLU in the stem), zero padding is not -inf padding."""
    v = next(v for v in SYNTHETIC if v.name == "synthetic/basic_v2")
    params = weights.random_params(v, 0)
    x = weights.random_input(v, 2, 33, 33)
    wrong = v.replace(pool_pad_value="zero")
    model = adapter.build(wrong)
    adapter.load_params(wrong, model, params)
    assert first_mismatch(v, adapter.run(wrong, model, x), reference.forward(v, params, x)) == "stem/pool"
