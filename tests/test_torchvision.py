"""Real torchvision against equiv: the only tests in which third-party PyTorch code computes a
torchvision/ variant. They need a torchvision that imports, which the pinned torch 2.13.0 lacks; the
CI torchvision stage (`.ci/run`, `bash scripts/test-torchvision.sh`: torch 2.14.1 + torchvision 0.29.1
in `.venv-torch214`, no TensorFlow) runs this file. Elsewhere the whole file skips, saying why.

Each test names the code on each side:
- "real torchvision": `torchvision.models.resnetNN`, its own forward, read through forward hooks on
  its own submodules (every canonical tap: a block's shared ReLU gives conv1, conv2 and the unit,
  the last BatchNorm the last conv, `downsample` the shortcut);
- "equiv torch module": `equiv.families.resnet.torch.ResNet`, equiv's generic build, which the default
  suite compares with slim, Keras and the reference;
- "float64 reference": `equiv.reference`, numpy in float64, written from the description alone;
- "tvcopy": tests/torchvision_resnet.py, the verbatim copy of torchvision 0.29.1's resnet.py that
  stands in for torchvision in the default suite.
"""

from __future__ import annotations

import inspect
import pathlib
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests import torchvision_layout as TL

if TL.torchvision is None:
    pytest.skip(f"real torchvision not importable ({TL.REAL_ERROR}): this file runs in the CI torchvision "
                "stage (bash scripts/test-torchvision.sh); the default suite's tests marked 'tvcopy' use the "
                f"{TL.COPY} instead", allow_module_level=True)

from equiv import canonical as C
from equiv import compare, reference, variants, weights
from equiv.frameworks import torch as adapter
from equiv.variants import Variant

torchvision = TL.torchvision
TORCHVISION = [v for v in variants.all_variants() if v.framework == "torchvision"]
RESNETS = [v for v in TORCHVISION if v.family == "resnet"]  # the tap-by-tap cases below read ResNet fields
VGGS = [v for v in TORCHVISION if v.family == "vgg"]  # their own tests, at the end
REAL = f"real torchvision {torchvision.__version__}"
SIZE = (33, 32)  # odd by even: a padding that is not torchvision's shows on one side


class Case:
    def __init__(self, v: Variant):
        self.v = v
        self.params = weights.random_params(v, 0)
        self.ours = adapter.build(v)
        adapter.load_params(v, self.ours, self.params)
        self.real = getattr(torchvision.models, v.short_name)(weights=None, num_classes=v.num_classes).eval()
        self.real.load_state_dict(self.ours.state_dict(), strict=True)
        self.x = weights.random_input(v, 2, *SIZE)
        self._real_taps: dict[str, np.ndarray] | None = None

    def real_taps(self) -> dict[str, np.ndarray]:
        if self._real_taps is None:
            self._real_taps = TL.torchvision_taps(self.v, self.real, self.x)
        return self._real_taps


# Tap by tap in CI: resnet18, 34 and 50 hold both of torchvision's blocks and every convention; 101 and
# 152 repeat the same blocks and carry the slow marker (`bash scripts/test-torchvision.sh -m ""`, and
# `tox -e slow`), which keeps the stage within its CI budget. Their layout and strict load run in CI.
CASES = [pytest.param(v, id=v.name, marks=[pytest.mark.slow] if sum(v.depths) > 16 else []) for v in RESNETS]


@pytest.fixture(scope="module", params=CASES)
def case(request) -> Case:
    return Case(request.param)


def _layout(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(t.shape), t.dtype) for k, t in model.state_dict().items()]


# Issue 16 A: the 101-layer ResNeXt (88.8M parameters) builds twice in its layout test: slow there too.
LAYOUTS = [pytest.param(v, id=v.name, marks=[pytest.mark.slow] if v.name == "torchvision/resnext101_32x8d" else [])
           for v in TORCHVISION]


@pytest.mark.parametrize("v", LAYOUTS)
def test_equiv_torch_module_has_real_torchvision_layout_and_loads_strictly(v):
    """equiv torch module vs real torchvision: the same state_dict keys, in order, shapes and dtypes,
    and each loads the other's state_dict with strict=True."""
    ours = adapter.build(v)
    real = getattr(torchvision.models, v.short_name)(weights=None, num_classes=v.num_classes).eval()
    assert _layout(ours) == _layout(real), f"{v.name}: equiv torch module vs {REAL} {v.short_name}"
    assert set(adapter.framework_names(v).values()) == {
        k for k in real.state_dict() if not k.endswith(".num_batches_tracked")}
    real.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(real.state_dict(), strict=True)


def test_real_torchvision_matches_float64_reference_at_every_tap(case):
    """real torchvision (its own forward) vs equiv's float64 numpy reference, with equiv's weights:
    two independent programs, every tap within its float32 tolerance."""
    v = case.v
    theirs = case.real_taps()
    ref = reference.forward(v, case.params, case.x)
    tol = compare.tap_tolerances(v)
    assert list(theirs) == C.tap_names(v)
    for name, t in theirs.items():
        assert t.shape == ref[name].shape, f"{name}: {REAL} {t.shape} vs float64 reference {ref[name].shape}"
        err, scale = float(np.abs(t - ref[name]).max()), float(np.abs(ref[name]).max())
        assert err <= tol[name] * scale, (f"{v.name} {name}: {REAL} {v.short_name} vs float64 reference: "
                                          f"max error {err:.3g} > {tol[name]:.3g} of scale {scale:.3g}")


def test_real_torchvision_and_equiv_torch_module_agree_bit_for_bit(case):
    """real torchvision vs equiv torch module, same torch, same weights: identical at every tap."""
    v = case.v
    theirs = case.real_taps()
    ours = adapter.run(v, case.ours, case.x)
    for name in C.tap_names(v):
        diff = float(np.abs(ours[name] - theirs[name]).max())
        assert diff == 0, f"{v.name} {name}: equiv torch module vs {REAL} {v.short_name}: max abs {diff:.3g}"


_BLOCK = re.compile(r"^# >>> torchvision (\S+) resnet\.py lines (\d+)-(\d+)\n(.*?)^# <<<$", re.M | re.S)


def test_tvcopy_is_verbatim_real_torchvision_source():
    """tests/torchvision_resnet.py (tvcopy) vs real torchvision's resnet.py: every copied block is its
    stated lines, byte for byte, and the blocks hold every definition the copy's tests use."""
    copy = (pathlib.Path(__file__).parent / "torchvision_resnet.py").read_text()
    real = inspect.getsource(torchvision.models.resnet).splitlines(keepends=True)
    blocks = _BLOCK.findall(copy)
    assert len(blocks) == 4
    for version, first, last, text in blocks:
        assert version == torchvision.__version__.split("+")[0], f"tvcopy is of {version}, {REAL} is installed"
        assert text == "".join(real[int(first) - 1:int(last)]), f"tvcopy lines {first}-{last} differ from {REAL}"
    copied = "".join(text for *_, text in blocks)
    for name in ("conv3x3", "conv1x1", "BasicBlock", "Bottleneck", "ResNet", "_resnet", *(v.short_name for v in
                                                                                          RESNETS)):
        assert re.search(rf"^(def|class) {name}\b", copied, re.M), name


@pytest.mark.parametrize("name", ["torchvision/resnet18", "torchvision/resnet50", "torchvision/resnext50_32x4d"])
def test_tvcopy_and_real_torchvision_agree_bit_for_bit(name):
    """tvcopy vs real torchvision, one state_dict loaded strictly into both: identical logits."""
    v = variants.get(name)
    real = getattr(torchvision.models, v.short_name)(weights=None, num_classes=v.num_classes).eval()
    tvcopy = TL.copied_torchvision(v)
    tvcopy.load_state_dict(real.state_dict(), strict=True)
    x = torch.from_numpy(C.nhwc_to_nchw(weights.random_input(v, 2, *SIZE)))
    with torch.inference_mode():
        assert torch.equal(tvcopy(x), real(x)), f"tvcopy vs {REAL} {v.short_name}"


# equiv.testing.assert_equivalent on a real torchvision module, a planted fault in it included:
# tests/test_testing.py::test_a_torchvision_module_runs_its_own_forward_against_equivs_build, which the
# stage runs with real torchvision.


# ---------------------------------------------------------------------------------------
# Issue 16 A: real timm (1.0.31, installed beside torchvision in the stage) against equiv. timm needs
# torchvision, so it never imports in the default suite, where equiv's generic torch module builds
# timm/ variants in timm's layout; here `equiv.frameworks.torch.build` builds timm's own model.

try:
    import timm
except Exception as exc:  # noqa: BLE001 - timm imports torchvision, which fails in many ways
    if TL.REQUIRED:
        raise ImportError(f"EQUIV_REQUIRE_TORCHVISION=1 but timm does not import: {exc}") from exc
    timm = None
    TIMM_ERROR = f"{type(exc).__name__}: {exc}".splitlines()[0]

needs_timm = pytest.mark.skipif(timm is None, reason="timm not importable (the stage installs timm==1.0.31)")
TIMM = [v for v in variants.all_variants() if v.framework == "timm"]


@needs_timm
@pytest.mark.parametrize("v", TIMM, ids=[v.name for v in TIMM])
def test_equiv_torch_module_has_real_timm_layout_and_loads_strictly(v):
    """equiv torch module (reference=False: its generic build) vs real timm.create_model(name): the same
    state_dict keys in order, shapes and dtypes, each loading the other's strictly; timm's pretrained_cfg
    asks for the input the variant names."""
    from equiv import preprocessing

    ours = adapter.build(v, reference=False)
    real = timm.create_model(v.short_name, pretrained=False, num_classes=v.num_classes).eval()
    assert type(ours).__module__ == "equiv.families.resnet.torch" and type(real).__module__.startswith("timm.")
    assert _layout(ours) == _layout(real), f"{v.name}: equiv torch module vs real timm {timm.__version__}"
    assert set(adapter.framework_names(v).values()) == {
        k for k in real.state_dict() if not k.endswith(".num_batches_tracked")}
    real.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(real.state_dict(), strict=True)
    record = preprocessing.of_variant(v)
    cfg = real.pretrained_cfg
    assert tuple(cfg["mean"]) == tuple(record.mean) and tuple(cfg["std"]) == tuple(record.std), (cfg, record)


@needs_timm
@pytest.mark.parametrize("v", TIMM, ids=[v.name for v in TIMM])
def test_real_timm_agrees_with_equiv_at_every_tap(v):
    """real timm (equiv's native torch build where timm imports: timm.create_model, read through hooks on its
    own modules) vs equiv's generic torch module, bit for bit at every tap, and vs the float64 reference
    within each tap's tolerance; equiv's weights, loaded strictly into timm's model."""
    assert v.built_by() == v.reference
    real = adapter.build(v)
    assert type(real).__module__.startswith("timm."), type(real)
    ours = adapter.build(v, reference=False)
    params = weights.random_params(v, 0)
    adapter.load_params(v, ours, params)
    real.load_state_dict(ours.state_dict(), strict=True)
    x = weights.random_input(v, 2, *SIZE)
    theirs, mine = adapter.run(v, real, x), adapter.run(v, ours, x)
    ref, tol = reference.forward(v, params, x), compare.tap_tolerances(v)
    assert list(theirs) == C.tap_names(v)
    for name in C.tap_names(v):
        assert np.array_equal(theirs[name], mine[name]), f"{v.name} {name}: real timm vs equiv torch module"
        err, scale = float(np.abs(theirs[name] - ref[name]).max()), float(np.abs(ref[name]).max())
        assert err <= tol[name] * scale, f"{v.name} {name}: real timm vs float64 reference: {err:.3g} of {scale:.3g}"


# ---------------------------------------------------------------------------------------
# VGG (issue 19): real torchvision.models.vgg16 / vgg16_bn / vgg19 against equiv's torch module and the
# float64 reference, tap by tap. The taps are read through hooks found from torchvision's own modules
# (every ReLU of `features` a conv, every MaxPool2d a pool, `avgpool` the map it flattens, the
# classifier's ReLUs fc6 and fc7, its last Linear the logits), not from equiv's layout tables.

VGG_SIZE = (64, 48)  # the last pool is 2x1: torchvision's AdaptiveAvgPool2d((7, 7)) bins unevenly
# In CI vgg16_bn alone (BatchNorm and the flatten rule; 30-40 s): vgg16 and vgg19 repeat it, under `slow`.
VGG_CASES = [pytest.param(v, id=v.name, marks=[] if v.short_name == "vgg16_bn" else [pytest.mark.slow]) for v in VGGS]


def real_vgg_taps(v: Variant, model: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    names = iter(C.tap_names(v))
    modules = [m for m in model.features if isinstance(m, (torch.nn.ReLU, torch.nn.MaxPool2d))]
    modules += [model.avgpool] + [m for m in model.classifier if isinstance(m, torch.nn.ReLU)]
    modules.append(model.classifier[-1])
    got, handles = {}, []
    for m in modules:
        name = next(names)
        handles.append(m.register_forward_hook(
            lambda mod, inputs, output, name=name: got.__setitem__(name, output.detach().clone().numpy())))
    try:
        with torch.inference_mode():
            model(torch.from_numpy(C.nhwc_to_nchw(x)))
    finally:
        for h in handles:
            h.remove()
    # the flatten tap in canonical order: torchvision's 7x7 map, NHWC, flattened
    got["flatten"] = C.nchw_to_nhwc(got["flatten"]).reshape(len(x), -1)
    return {name: C.nchw_to_nhwc(got[name]) if got[name].ndim == 4 else got[name] for name in C.tap_names(v)}


@pytest.mark.parametrize("v", VGG_CASES)
def test_real_torchvision_vgg_and_equiv_agree_at_every_tap(v):
    """real torchvision.models.vggNN loads equiv's state_dict strictly (and equiv's module torchvision's),
    then: bit for bit with equiv's torch module, and within the float32 tolerance of the float64
    reference, at every tap (classifier.0's NCHW columns included: equiv permutes them on load)."""
    params = weights.random_params(v, 0)
    ours = adapter.build(v)
    adapter.load_params(v, ours, params)
    real = getattr(torchvision.models, v.short_name)(weights=None, num_classes=v.num_classes).eval()
    real.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(real.state_dict(), strict=True)
    x = weights.random_input(v, 2, *VGG_SIZE)
    theirs = real_vgg_taps(v, real, x)
    mine = adapter.run(v, ours, x)
    ref = reference.forward(v, params, x)
    tol = compare.tap_tolerances(v)
    assert list(theirs) == C.tap_names(v)
    for name, t in theirs.items():
        assert float(np.abs(mine[name] - t).max()) == 0, f"{v.name} {name}: equiv torch module vs {REAL}"
        err, scale = float(np.abs(t - ref[name]).max()), float(np.abs(ref[name]).max())
        assert err <= tol[name] * scale, f"{v.name} {name}: {REAL} vs float64 reference: {err:.3g} of {scale:.3g}"
    # and the canonical fc6 kernel read back from torchvision's own state_dict is the one loaded
    back = adapter.state_dict_params(v, real.state_dict())
    assert np.array_equal(back["fc6/kernel"], params["fc6/kernel"])
    # a user's torchvision VGG, as assert_equivalent reads it (hooks the VGG builder's foreign_taps
    # name: every conv's ReLU, every pool, fc6/fc7's ReLUs, the logits): the same taps, bit for bit
    runner, hooked, _ = adapter.model_runner(v, real)
    assert set(hooked) == set(C.tap_names(v)) - {"flatten"}
    got = runner(x, hooked)
    assert all(np.array_equal(got[t], theirs[t]) for t in hooked)
