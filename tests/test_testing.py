"""equiv.testing.assert_equivalent, called as a user's test calls it, on real frameworks.

Cheap by design: mostly a narrow resnet18 (TINY, widths 8-16) at 16x16 in PyTorch; the real
torchvision/resnet18 where a test needs a registered variant or torchvision's own layout."""

import re

import numpy as np
import pytest
import torch

import equiv
from equiv import canonical as C
from equiv import files
from equiv import weights as W
from equiv.errors import EquivError
from equiv.families.resnet import plan as P
from equiv.frameworks import adapter
from equiv.testing import NotEquivalentError, assert_equivalent
from tests.torchvision_layout import IMPL, torchvision_model

V = equiv.get("torchvision/resnet18")
TINY = V.replace(name="tests/tiny18", widths=(8, 8, 16, 16), stem_width=8, num_classes=10)
SIZE = (16, 16)


@pytest.fixture(scope="module")
def params():
    return W.random_params(TINY, 3)


def _model(params):
    return equiv.build(TINY, "torch", weights=params)


def test_plumbing_one_variant_named_twice_runs_one_build_twice_bit_exact():
    """Plumbing, not equivalence: a name and a Variant of one variant are both built natively (equiv's
    torch module) with the same seeded weights, so every tap must be identical, in plan order."""
    report = assert_equivalent(V.name, V, input_size=SIZE, batch=1)
    assert report.equivalent and report.worst_rel == 0.0
    assert [r.name for r in report.taps] == C.tap_names(V)


def test_a_model_takes_the_variant_side_its_weights(params):
    report = assert_equivalent(_model(params), TINY, variant=TINY, input_size=SIZE, batch=1)
    assert report.equivalent and len(report.taps) == len(C.tap_names(TINY))
    assert report.settings["input_shape"] == [1, 16, 16, 3]


def test_a_planted_fault_names_its_tap_and_worst_element(params):
    model = _model(params)
    model.layer2[0].bn2.eps = 1e-3  # stage2/unit1/conv2's BatchNorm
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(model, TINY, variant=TINY, input_size=SIZE, seed=4)
    report, message = info.value.report, str(info.value)
    assert report.first.name == "stage2/unit1/conv2"
    assert all(r.ok for r in report.taps[:C.tap_names(TINY).index("stage2/unit1/conv2")])
    # the worst element, recomputed here from the two models run by hand on the same input
    x = W.random_input(TINY, 2, *SIZE, 4)
    ours = adapter("torch").run(TINY, model, x, ["stage2/unit1/conv2"])["stage2/unit1/conv2"]
    ref = adapter("torch").run(TINY, _model(params), x, ["stage2/unit1/conv2"])["stage2/unit1/conv2"]
    diff = np.abs(ours.astype(np.float64) - ref)
    index = np.unravel_index(np.argmax(diff), diff.shape)
    assert "first diverging tap 'stage2/unit1/conv2'" in message
    assert f"index {tuple(int(i) for i in index)}" in message
    assert f"a:torch = {ours[index]:.7g}, b:torch = {ref[index]:.7g}" in message
    rel = diff.max() / np.abs(ours).max()
    assert report.first.rel == pytest.approx(rel, rel=1e-6)
    assert f"allowed: {report.first.tol:.3g}" in message
    assert "stage2/unit1/conv2" in message.split("\n\n", 1)[1]  # the per-tap table follows


def test_scale_rtol_and_atol_move_the_line(params):
    model = _model(params)
    model.layer2[0].bn2.eps = 1e-3
    check = {"variant": TINY, "input_size": SIZE, "batch": 1}
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(model, TINY, **check)
    worst = info.value.report.worst_rel
    assert assert_equivalent(model, TINY, scale_rtol=2 * worst, **check).equivalent
    with pytest.raises(NotEquivalentError):
        assert_equivalent(model, TINY, scale_rtol=worst / 2, **check)
    largest = max(r.max_abs for r in info.value.report.taps)
    assert assert_equivalent(model, TINY, scale_rtol=0, atol=2 * largest, **check).equivalent
    with pytest.raises(NotEquivalentError):
        assert_equivalent(model, TINY, scale_rtol=0, atol=largest / 2, **check)


def test_shapes_that_differ_are_named(params):
    """Same weights, a stem of stride 1 instead of 2: every tap has another shape."""
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(_model(params), TINY.replace(name="tests/tiny18-s1", stem_stride=1), variant=TINY,
                          input_size=SIZE, batch=1)
    assert info.value.report.first.name == "stem/conv" and info.value.report.first.status == "shape"
    assert "shapes differ: a:torch (1, 8, 8, 8), b:torch (1, 16, 16, 8)" in str(info.value)


def test_nan_is_named(params):
    model = _model(params)
    with torch.no_grad():
        model.fc.bias[0] = float("nan")  # the variant side takes these weights too
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(model, TINY, variant=TINY, input_size=SIZE, batch=1)
    assert info.value.report.first.name == "logits" and info.value.report.first.status == "nonfinite"
    assert "NaN or Inf in a:torch and b:torch" in str(info.value)


@pytest.mark.parametrize("impl", [IMPL])
def test_a_torchvision_module_runs_its_own_forward_against_equivs_build(impl):
    """torchvision's resnet18 (`impl`: real torchvision, or tvcopy, the verbatim copy of its resnet.py)
    against equiv's torch build of the same weights: its state_dict is read in torchvision's names, and
    its own forward gives the unit outputs and the logits through hooks, so a fault in *its* code is
    caught."""
    mine = torchvision_model(V)
    mine.load_state_dict(equiv.build(V, "torch", weights=W.random_params(V, 0)).state_dict())
    report = assert_equivalent(mine, V.name, input_size=(33, 32), batch=1)
    units = [u.name for u in P.units(V)]
    assert [r.name for r in report.taps] == units + ["logits"]
    mine.layer3[1].bn2.eps = 1e-2
    with pytest.raises(NotEquivalentError, match="first diverging tap 'stage3/unit2'"):
        assert_equivalent(mine, V.name, input_size=(33, 32), batch=1)
    assert not mine.training  # its mode was given back


@pytest.mark.parametrize("impl", [IMPL])
def test_a_module_that_does_not_fit_is_refused_with_what_is_needed(impl):
    ten = torchvision_model(V.replace(num_classes=10))  # `impl`: real torchvision, or tvcopy
    with pytest.raises(EquivError, match=r"logits/kernel expected \(512, 1000\), found \(512, 10\)"):
        assert_equivalent(ten, V.name)
    # told the head, it passes
    assert assert_equivalent(ten, equiv.get(V.name, num_classes=10), input_size=SIZE, batch=1).equivalent
    odd = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    with pytest.raises(EquivError, match=r"unexpected \(first: 0\.weight\b.*torchvision's names"):
        assert_equivalent(odd, V.name)
    with pytest.raises(EquivError, match="cannot tell which variant .* pass variant="):
        assert_equivalent(odd, odd)


def test_weight_files_and_an_inferred_variant(tmp_path):
    pt, st = tmp_path / "r18.pt", tmp_path / "r18.safetensors"
    params = W.random_params(V, 0)
    files.write(params, pt, V, "torch")
    files.write(W.random_params(V, 1), st, V, "safetensors")
    # the file is read as the model's variant, inferred from its parameters
    assert assert_equivalent(equiv.build(V, "torch", weights=params), str(pt), input_size=SIZE, batch=1).equivalent
    with pytest.raises(NotEquivalentError) as info:
        assert_equivalent(pt, st, variant=V.name, input_size=SIZE, batch=1, taps=["stem/conv", "logits"])
    assert info.value.report.first.name == "stem/conv"  # other weights from the first layer on
    with pytest.raises(EquivError, match="needs variant="):
        assert_equivalent(pt, st)


def test_bad_arguments_are_named():
    with pytest.raises(EquivError, match="scale_rtol=-1"):
        assert_equivalent(V.name, V.name, scale_rtol=-1)
    with pytest.raises(EquivError, match="cannot compare a int"):
        assert_equivalent(42, V.name)
    with pytest.raises(EquivError, match="neither an existing weight file nor a registered variant.*did you mean"):
        assert_equivalent("torchvision/resnet81", V.name)
    with pytest.raises(EquivError, match="unknown tap"):
        assert_equivalent(V.name, V.name, taps=["stem/nope"], input_size=SIZE)
    with pytest.raises(EquivError, match="both operands are variants"):
        assert_equivalent(V.name, V.name, variant=V.name)


def test_quiet_unless_asked(capfd, params):
    assert_equivalent(_model(params), TINY, variant=TINY, input_size=SIZE, taps="logits")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    lines = []
    assert_equivalent(_model(params), TINY, variant=TINY, input_size=SIZE, taps="logits", progress=lines.append)
    assert any(line.startswith("running") for line in lines)


def test_keras_model_objects_and_their_fixed_input_size(params, equiv_keras):
    """A Keras model built by equiv, and keras.applications' own model with a fixed input."""
    km = equiv.build(TINY, "keras", weights=params)
    assert assert_equivalent(km, _model(params), variant=TINY, input_size=(17, 16)).equivalent
    app = equiv_keras.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3), classifier_activation=None)
    # plumbing: one model against itself, to show the variant and input size are read from the model
    report = assert_equivalent(app, app, batch=1)
    assert report.variant == "keras/ResNet50V2" and report.settings["input_shape"] == [1, 32, 32, 3]
    with pytest.raises(EquivError, match=re.escape("takes 32x32 inputs only")):
        assert_equivalent(app, app, input_size=(40, 40))


def test_slim_model_objects(params, equiv_slim):
    sm = equiv.build(TINY, "slim", weights=params)
    try:
        assert assert_equivalent(sm, TINY, variant=TINY, input_size=(17, 16)).equivalent
    finally:
        sm.close()


def test_zeroed_gammas_make_uninformative_taps_that_strict_refuses(params):
    """timm's zero-initialised last BatchNorm of each block, planted in equiv's weights: those taps
    are all zero on both sides (Keras and torch builds of the same weights), so they match whatever
    the arithmetic. The report names them; strict=True refuses the comparison."""
    from equiv.testing import UninformativeError

    zeroed = dict(params)
    last_convs = [u.convs[-1].name for u in P.units(TINY)]
    for layer in last_convs:
        zeroed[f"{layer}/bn/gamma"] = np.zeros_like(params[f"{layer}/bn/gamma"])
        zeroed[f"{layer}/bn/beta"] = np.zeros_like(params[f"{layer}/bn/beta"])
    keras_model, torch_model = (equiv.build(TINY, fw, weights=zeroed) for fw in ("keras", "torch"))
    report = assert_equivalent(keras_model, torch_model, variant=TINY, input_size=SIZE, batch=2)
    assert report.uninformative == {layer: "all zero" for layer in last_convs}
    assert report.to_json()["informative_taps"] == len(C.tap_names(TINY)) - len(last_convs)
    from equiv import report as R

    assert f"{len(C.tap_names(TINY)) - len(last_convs)} of {len(C.tap_names(TINY))} taps carried information" \
        in R.to_text(report, color=False)
    with pytest.raises(UninformativeError, match=re.escape(f"{last_convs[0]} (all zero)")):
        assert_equivalent(keras_model, torch_model, variant=TINY, input_size=SIZE, batch=2, strict=True)
    # the unplanted weights carry information at every tap, and strict passes
    plain = assert_equivalent(equiv.build(TINY, "keras", weights=params), _model(params), variant=TINY,
                              input_size=SIZE, batch=2, strict=True)
    assert plain.uninformative == {}
