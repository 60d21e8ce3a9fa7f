"""The Inception v3 family (issue 19): drawn small Inceptions agree in every framework and the
float64 reference, a changed convention is realised and caught at its first tap, two classic
port faults are caught where they live (a branch's convs run in the wrong order: at that block;
the BatchNorm scale dropped: at the first conv), weights round-trip bit-exactly through every
framework and file format, and the registered Inception v3s hold their libraries' counts.

Which code runs on each side: the registered networks are built by their real libraries
(tf_slim.nets.inception_v3.inception_v3, keras.applications.InceptionV3; torchvision's layout is
equiv's module, met by real torchvision in tests/test_torchvision.py); every other description
by equiv's generic builder of each backend; the float64 numpy reference is the fourth, independent
side. The registered networks at 299x299 run in tests/test_check.py (slow) and in `equiv golden
verify` (CI); small descriptions of every block kind and convention run here in the default suite.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from equiv import canonical as C
from equiv import compare, files
from equiv import reference as R
from equiv import variants as V
from equiv import weights as W
from equiv.errors import ParamMismatchError
from equiv.families.inception import plan as P
from equiv.families.inception import strategies as ins
from equiv.families.inception.description import Inception
from equiv.families.inception.zoo import MAX, conv
from equiv.frameworks import FRAMEWORKS, adapter
from equiv.porting import port

PROFILE = settings.get_current_profile_name().removeprefix("equiv-")
EXAMPLES = {"ci": 2, "dev": 2, "thorough": 60}.get(PROFILE, max(1, settings().max_examples // 4))
CI_SEED = 1920
SEED = int(os.environ.get("EQUIV_PROPERTY_SEED")
           or (CI_SEED if PROFILE == "ci" else random.SystemRandom().randrange(2**32)))
RANDOM = dict(derandomize=False, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A narrow Inception with every kind of mixed block (A, the B reduction, C's 1x7 / 7x1, the D
# reduction, E's split ends) in torchvision's conventions: affine BatchNorm, average pools that
# count their padding, the auxiliary head on the C block.
SMALL = Inception(name="hypothesis/inception_small", native="torch", description="a narrow torchvision-style Inception",
                  stem=(conv(3, 3, 4, 2, "valid"), conv(3, 3, 4), MAX),
                  blocks=(ins.block("A", (4, 3, 5, 2)), ins.block("B", (4, 3, 5, 2)), ins.block("C", (4, 3, 5, 2)),
                          ins.block("D", (3, 4, 3, 2)), ins.block("E", (3, 2, 4, 2))),
                  bn_scale=True, pool_count_pad=True, aux_logits=True, aux_from=2, aux_widths=(4, 6), num_classes=5)
SIZE = (C.min_input_size(SMALL), C.min_input_size(SMALL) + 1)  # 143 x 144: the C block's map 17x17


def run(fw, v, params, x):
    ad = adapter(fw)
    m = ad.build(v)
    try:
        ad.load_params(v, m, params)
        return ad.run(v, m, x), ad.export_params(v, m)
    finally:
        ad.release(m)


def first_bad(v, outputs, pairs=None):
    results = compare.compare_taps(outputs, C.tap_names(v), compare.tap_tolerances(v), pairs=pairs)
    first = compare.first_divergence(results)
    return first.name if first else None


def test_the_inception_v3s_are_registered_with_their_references_and_conventions():
    names = {v.name: v for v in V.all_variants() if v.family == "inception"}
    assert set(names) == {"slim/inception_v3", "keras/InceptionV3", "torchvision/inception_v3"}
    slim_, keras_, tv = names["slim/inception_v3"], names["keras/InceptionV3"], names["torchvision/inception_v3"]
    assert (slim_.bn_scale, keras_.bn_scale, tv.bn_scale) == (False, False, True)
    assert slim_.bn_epsilon == keras_.bn_epsilon == tv.bn_epsilon == 1e-3
    assert (slim_.pool_count_pad, keras_.pool_count_pad, tv.pool_count_pad) == (False, False, True)
    assert (slim_.aux_logits, keras_.aux_logits, tv.aux_logits) == (True, False, True)
    assert (slim_.num_classes, keras_.num_classes, tv.num_classes) == (1001, 1000, 1000)
    assert not tv.transform_input  # torchvision's default without weights
    assert C.unit_count(tv) == 11 and len(P.convs(keras_)) == 94  # keras.applications' 94 conv2d_bn
    assert (C.min_input_size(keras_), C.min_input_size(tv), C.min_input_size(slim_)) == (75, 299, 299)
    # keras.applications documents InceptionV3 at 23,851,784 parameters (its BatchNorm statistics counted);
    # torchvision's Inception_V3_Weights meta: 27,161,264 (parameters: its BatchNorms' gammas, not statistics)
    assert C.param_count(keras_) == 23_851_784
    trained = sum(int(np.prod(s)) for n, s in C.param_shapes(tv).items()
                  if not n.endswith(("moving_mean", "moving_variance")))
    assert trained == 27_161_264
    # 5.7 GMACs at 299 (torchvision's _ops 5.713 GFLOPs counts multiply-adds)
    assert abs(C.flops(tv, 299, 299) / 2e9 - 5.713) < 0.01


def test_the_plans_shapes_are_what_the_reference_computes():
    """At an odd by even size, SMALL, and without its auxiliary head at its smallest: every tap's shape
    (tests/families/test_contract.py holds keras/InceptionV3 at its smallest, 75)."""
    for v, (h, w) in [(SMALL, SIZE), (SMALL.replace(aux_logits=False), (31, 34))]:
        taps = R.forward(v, W.random_params(v, 0), W.random_input(v, 1, h, w))
        assert {t: a.shape[1:] for t, a in taps.items()} == C.tap_shapes(v, h, w)


@seed(SEED)
@settings(max_examples=EXAMPLES, **RANDOM)
@given(v=ins.variants(max_blocks=2, max_width=5), data=st.data())
def test_drawn_inceptions_agree_in_every_framework_and_the_reference(v, data):
    side = C.min_input_size(v)
    h, w = data.draw(st.integers(side, side + 3)), data.draw(st.integers(side, side + 3))
    s = data.draw(st.integers(0, 2**16))
    note(f"EQUIV_PROPERTY_SEED={SEED}; input {h}x{w}, seed {s}; {v.conventions()!r}")
    x = W.random_input(v, 1, h, w, s)
    params = W.random_params(v, s, cache=False)
    outputs, exported = {"reference": R.forward(v, params, x)}, {}
    for fw in FRAMEWORKS:
        outputs[fw], exported[fw] = run(fw, v, params, x)
    pairs = [("reference", fw) for fw in FRAMEWORKS]
    pairs += [(a, b) for i, a in enumerate(FRAMEWORKS) for b in FRAMEWORKS[i + 1:]]
    assert first_bad(v, outputs, pairs) is None
    for fw, back in exported.items():
        assert list(back) == list(params)
        assert all(np.array_equal(back[k], params[k]) for k in params), fw


# CI budget: every convention in torch (the cheapest build), and in every framework the one the
# references really differ in, the average pool counting its padding; the rest are slow (the drawn
# descriptions above realise every convention in every framework in the default suite).
CONVENTION_CASES = [pytest.param(fw, c, id=f"{fw}-{c}",
                                 marks=[] if fw == "torch" or c == "pool_count_pad" else [pytest.mark.slow])
                    for fw in FRAMEWORKS for c in ins.CONVENTIONS]


@pytest.mark.parametrize("fw, convention", CONVENTION_CASES)
def test_a_changed_convention_is_realised_and_caught_at_its_first_tap(fw, convention):
    """Each convention of SMALL changed in turn, built in `fw` on SMALL's weights: the loader refuses
    weights that no longer fit ("parameters": the BatchNorm scale, the auxiliary head), or the build
    computes the changed description's reference and diverges from SMALL's at the first tap where
    the two references differ ("changed")."""
    x = W.random_input(SMALL, 1, *SIZE, 3)
    params = W.random_params(SMALL, 3)
    ref = R.forward(SMALL, params, x)
    outcomes = {}
    for m in ins.mutants(SMALL, SIZE)[convention]:
        try:
            out, _ = run(fw, m, params, x)
        except ParamMismatchError:
            assert C.param_shapes(m) != C.param_shapes(SMALL)
            outcomes[getattr(m, convention)] = "parameters"
            continue
        ref_m = R.forward(m, params, x)
        realised = first_bad(m, {"reference": ref_m, fw: out})
        assert realised is None, f"{fw} does not realise {convention}={getattr(m, convention)}: {realised}"
        expected = first_bad(m, {"a": ref, "b": ref_m})
        assert first_bad(m, {"reference": ref, fw: out}) == expected
        outcomes[getattr(m, convention)] = "changed" if expected else "irrelevant"
    expected_outcome = {"bn_scale": "parameters", "aux_logits": "parameters"}.get(convention, "changed")
    assert set(outcomes.values()) == {expected_outcome}, f"{convention}: {outcomes}"
    if convention == "pool_count_pad":  # TF's SAME average pool: border windows divide by fewer cells
        assert first_bad(SMALL, {"a": ref, "b": R.forward(SMALL.replace(pool_count_pad=False), params, x)}) \
            == "mixed0/branch3/conv1"
    if convention in ("bn_epsilon", "transform_input"):
        assert first_bad(SMALL, {"a": ref, "b": R.forward(SMALL.replace(**{convention: ins.CONVENTIONS[convention][1]
                                                                            if getattr(SMALL, convention) ==
                                                                            ins.CONVENTIONS[convention][0]
                                                                            else ins.CONVENTIONS[convention][0]}),
                                                          params, x)}) == "stem/conv1"


# ---------------------------------------------------------------------------------------
# Negative controls (issue 19 item 4)


def _c_block(v) -> int:
    """The first C block (the one with a five-conv 7x7dbl branch)."""
    return next(b.index for b in P.blocks(v) if any(len(br.layers) == 5 for br in b.branches))


def _swapped_branch(v, params):
    """The port that runs a C block's 7x7dbl branch as 1x1, 1x7, 7x1, ... instead of 1x1, 7x1, 1x7,
    ... (its 2nd and 3rd convs swapped, each with its own weights): the wrong network as a
    description, and its weights under that description's names."""
    i = _c_block(v)
    blocks = list(v.blocks)
    branches = list(blocks[i])
    ops, split = branches[2]
    branches[2] = ((ops[0], ops[2], ops[1], *ops[3:]), split)
    blocks[i] = tuple(branches)
    wrong = v.replace(blocks=tuple(blocks))
    a, b = f"mixed{i}/branch2/conv2", f"mixed{i}/branch2/conv3"
    moved = {}
    for name, arr in params.items():
        layer = name.split("/bn/")[0].rsplit("/kernel", 1)[0]
        other = {a: b, b: a}.get(layer)
        moved[name.replace(layer, other, 1) if other else name] = arr
    return wrong, {n: moved[n] for n in C.param_shapes(wrong)}, i


# CI budget: slim's graph of SMALL takes seconds to build; slim is slow here (the drawn descriptions
# hold slim's generic build against the reference in the default suite).
CHEAP = [pytest.param(fw, marks=[pytest.mark.slow] if fw == "slim" else []) for fw in FRAMEWORKS]


@pytest.mark.parametrize("fw", CHEAP)
def test_a_branchs_convs_in_the_wrong_order_are_caught_at_that_block(fw):
    """native=float64 reference of SMALL; port=equiv's generic {fw} build of SMALL with one branch's
    1x7 and 7x1 convs run in swapped order (each with its own weights: nothing fails to load). Every
    tap before that mixed block agrees; the first that diverges is inside it, the branch's last conv,
    and the faulty side is exactly the faulty network (its own float64 reference)."""
    params = W.random_params(SMALL, 1)
    x = W.random_input(SMALL, 2, *SIZE, 4)
    wrong, wrong_params, i = _swapped_branch(SMALL, params)
    out, _ = run(fw, wrong, wrong_params, x)
    ref = R.forward(SMALL, params, x)
    # the first tap that diverges (in network order: every tap before it agrees) is in that block
    assert first_bad(SMALL, {"reference": ref, fw: out}) == f"mixed{i}/branch2/conv5"
    assert first_bad(wrong, {"reference": R.forward(wrong, wrong_params, x), fw: out}) is None


def test_a_torch_port_running_a_branch_out_of_order_fails_assert_equivalent_at_that_block():
    """equiv.testing.assert_equivalent(faulty torch module, variant): a user's torch port of SMALL
    (equiv's module, its forward patched to call a C block's dbl_2 and dbl_3 convs in swapped order,
    its state_dict untouched) against SMALL's reference in torch: the error names that block's branch."""
    from equiv.testing import NotEquivalentError, assert_equivalent

    ad = adapter("torch")
    model = ad.build(SMALL)
    ad.load_params(SMALL, model, W.random_params(SMALL, 2))
    i = _c_block(SMALL)
    a, b = f"mixed{i}/branch2/conv2", f"mixed{i}/branch2/conv3"
    model.paths[a], model.paths[b] = model.paths[b], model.paths[a]
    with pytest.raises(NotEquivalentError) as err:
        assert_equivalent(model, SMALL, input_size=SIZE, batch=1)
    assert err.value.report.first.name == f"mixed{i}/branch2/conv5"


@pytest.mark.parametrize("fw", CHEAP)
def test_the_batchnorm_scale_dropped_is_caught_at_the_first_conv(fw):
    """native=float64 reference of SMALL (torchvision's affine BatchNorm, gammas drawn in 0.7-1.3);
    port=equiv's generic {fw} build with slim's and Keras' scale=False and the gammas left behind
    (a port that maps only the names the target has). The first conv's tap diverges."""
    params = W.random_params(SMALL, 1)
    x = W.random_input(SMALL, 2, *SIZE, 4)
    dropped = SMALL.replace(bn_scale=False)
    out, _ = run(fw, dropped, {n: params[n] for n in C.param_shapes(dropped)}, x)
    assert first_bad(SMALL, {"reference": R.forward(SMALL, params, x), fw: out}) == "stem/conv1"


# ---------------------------------------------------------------------------------------
# Weights and files


@pytest.mark.slow
def test_weights_round_trip_bit_exactly_through_every_framework():
    """native -> each other framework in turn -> native, for SMALL: every export bit-exact (slow: the
    drawn descriptions' exports are held bit for bit in every framework in the default suite)."""
    params = W.random_params(SMALL, 5)
    order = sorted(FRAMEWORKS, key=lambda f: f != SMALL.native)
    current = params
    for fw in order + order[:1]:
        ad = adapter(fw)
        m = ad.build(SMALL)
        ad.load_params(SMALL, m, current)
        current = ad.export_params(SMALL, m)
        ad.release(m)
        assert all(np.array_equal(current[k], params[k]) for k in params), fw


@pytest.mark.slow
def test_files_port_slim_to_torch_to_keras_with_verify_and_back_bit_exact(tmp_path):
    """(Slow: slim's graph and four files, 30 s; the drawn descriptions' exports are bit-exact in every
    framework in the default suite.) A slim checkpoint of a small slim-style Inception (no gamma, the
    1x1-conv logits and auxiliary logits, 11 classes) ported to a torch .pt, a Keras .weights.h5, a
    .safetensors and back to a checkpoint, each port verified; every file reads back to the same bits."""
    v = SMALL.replace(name="hypothesis/inception_slim", native="slim", bn_scale=False, pool_count_pad=False,
                      num_classes=11)
    params = W.random_params(v, 2)
    ad = adapter("slim")
    m = ad.build(v)
    ad.load_params(v, m, params)
    ckpt = ad.write_file(v, m, tmp_path / "inc.ckpt")
    ad.release(m)
    pt, h5, st_ = tmp_path / "inc.pt", tmp_path / "inc.weights.h5", tmp_path / "inc.safetensors"
    for src, dst in [(ckpt + ".index", pt), (pt, h5), (h5, st_), (st_, tmp_path / "back.ckpt")]:
        result = port(v, src, dst, verify=True, batch=1, input_size=SIZE)
        assert result.report.equivalent, result.report.first
    for path in (pt, h5, st_, tmp_path / "back.ckpt.index"):
        got = files.read(path, v)
        assert all(np.array_equal(got[k], params[k]) for k in params), path


INCEPTIONS = [v for v in V.all_variants() if v.family == "inception"]
FORMATS = ("tf-checkpoint", "keras-weights", "torch", "safetensors")
NATIVE_FORMAT = {"slim": "tf-checkpoint", "keras": "keras-weights", "torch": "torch"}


@pytest.mark.slow
@pytest.mark.parametrize("v", INCEPTIONS, ids=lambda v: v.name)
def test_a_registered_inception_ports_its_native_file_to_every_format_verified_and_back_bit_exact(v, tmp_path):
    """A file in the variant's native format, written by equiv (slim and Keras from their real library
    build: tf_slim.nets, keras.applications; torch in torchvision's layout from the params); ported to
    every other format with --verify (each a check of every tap
    at the variant's smallest input), then back to the native format: the same bits."""
    params = W.random_params(v, 0)
    native = {"slim": "native.ckpt", "keras": "native.weights.h5", "torch": "native.pt"}[v.native]
    files.write(params, tmp_path / native, v)  # slim and Keras: from their real library build
    path = str(tmp_path / native) + (".index" if v.native == "slim" else "")
    side = C.min_input_size(v)
    for fmt, suffix in zip(FORMATS, (".ckpt", ".weights.h5", ".pt", ".safetensors")):
        if fmt == NATIVE_FORMAT[v.native]:
            continue
        target = tmp_path / f"out{suffix}"
        result = port(v, path, target, verify=True, batch=1, input_size=(side, side))
        assert result.report.equivalent, (fmt, result.report.first)
        back = tmp_path / f"back_{fmt}{os.path.splitext(native)[1] if v.native != 'keras' else '.weights.h5'}"
        port(v, str(target) + (".index" if fmt == "tf-checkpoint" else ""), back)
        got = files.read(str(back) + (".index" if v.native == "slim" else ""), v)
        assert all(np.array_equal(got[k], params[k]) for k in params), fmt


def test_drop_background_drops_class_0_of_both_classifiers(tmp_path):
    """slim's 1001-class Inception has two classifiers (logits and AuxLogits): --drop-background
    turns both into 1000-class ones, every other parameter bit for bit (safetensors both sides:
    canonical names, no framework)."""
    from safetensors.numpy import save_file

    v = SMALL.replace(name="hypothesis/inception_1001", native="slim", bn_scale=False, num_classes=11)
    params = W.random_params(v, 0)
    save_file(params, str(tmp_path / "src.safetensors"))
    port(v, tmp_path / "src.safetensors", tmp_path / "dst.safetensors", drop_background_class=True)
    got = files.read(tmp_path / "dst.safetensors", v.replace(num_classes=10))
    for name in ("logits", "aux/logits"):
        assert np.array_equal(got[f"{name}/kernel"], params[f"{name}/kernel"][:, 1:])
        assert np.array_equal(got[f"{name}/bias"], params[f"{name}/bias"][1:])
    assert all(np.array_equal(got[k], params[k]) for k in params if "logits" not in k)


# ---------------------------------------------------------------------------------------
# equiv diff across the libraries' conventions (issue 19 item 3), on SMALL's layers in torch

SLIM_LIKE = SMALL.replace(name="hypothesis/inception_slim_like", native="slim", bn_scale=False, pool_count_pad=False)
KERAS_LIKE = SLIM_LIKE.replace(name="hypothesis/inception_keras_like", native="keras", aux_logits=False)


@pytest.mark.slow
def test_diff_slim_against_keras_conventions_agree_but_for_the_aux_head():
    """(Slow: two calibrations at 143x143; the torch-side diffs below run by default.) slim's conventions
    and Keras' differ only in the auxiliary head (and 1001 classes): with slim's weights, Keras' network
    is the same function at every tap both have; the head is set aside, said."""
    from equiv.checking import diff

    report = diff(SLIM_LIKE, KERAS_LIKE, "torch", input_size=SIZE, batch=1)
    assert report.equivalent and report.first is None
    assert report.settings["conventions_differing"] == ["aux_logits"]
    assert any("has no aux/conv1" in n and "set aside" in n for n in report.notes), report.notes
    assert "aux/logits" not in {r.name for r in report.taps}


def test_diff_torchvision_against_slim_conventions_diverges_at_the_first_conv_for_the_missing_gamma():
    """torchvision's affine BatchNorm against slim's scale=False, with torchvision's weights: slim has no
    gamma to take them (set aside, said), so the first conv diverges; the pool padding differs too."""
    from equiv.checking import diff

    report = diff(SMALL, SLIM_LIKE, "torch", input_size=SIZE, batch=1)
    assert not report.equivalent and report.first.name == "stem/conv1"
    assert report.settings["conventions_differing"] == ["bn_scale", "pool_count_pad"]
    assert any("bn/gamma" in n or "set aside" in n for n in report.notes)
    # slim's weights have no gamma for torchvision's network: refused, naming them
    with pytest.raises(ParamMismatchError, match="gamma"):
        diff(SLIM_LIKE, SMALL, "torch", input_size=SIZE, batch=1)


def test_diff_pool_padding_alone_diverges_at_the_first_branch_average_pool():
    """The same weights, only the branches' average pool counting its padding (torchvision) or not
    (TF): everything agrees up to the first pool branch, mixed0/branch3, where the border windows differ."""
    from equiv.checking import diff

    report = diff(SMALL, SMALL.replace(name="hypothesis/inception_tf_pool", pool_count_pad=False), "torch",
                  input_size=SIZE, batch=1)
    assert report.first.name == "mixed0/branch3/conv1"
    assert all(r.ok for r in report.taps if r.name.startswith("stem/"))


def test_diff_transform_input_diverges_at_the_first_conv():
    """torchvision transform_input=True against False, one set of weights: the input is re-normalised
    before the stem, so the first conv diverges."""
    from equiv.checking import diff

    report = diff(SMALL, SMALL.replace(transform_input=True), "torch", input_size=SIZE, batch=1)
    assert report.first.name == "stem/conv1"
    assert report.settings["conventions_differing"] == ["transform_input"]


@pytest.mark.slow
def test_diff_of_the_registered_slim_and_keras_inception_v3_at_299():
    """`equiv diff slim/inception_v3 keras/InceptionV3 --input-size 299 299` in Keras (keras.applications
    against equiv's Keras build of slim's description): the same function at every tap both have."""
    from equiv.checking import diff

    report = diff("slim/inception_v3", "keras/InceptionV3", "keras", input_size=(299, 299), batch=1)
    assert report.equivalent, report.first
    assert set(report.settings["conventions_differing"]) == {"aux_logits", "input_size"}


def _numbered_on(model, by: int):
    """`model` cloned as Keras names it in a process that built another model first: each auto-named
    conv2d, batch_normalization and activation layer numbered `by` further on (`conv2d` -> `conv2d_{by}`)."""
    import re

    import keras

    def clone(layer):
        config = layer.get_config()
        m = re.fullmatch(r"(conv2d|batch_normalization|activation)(?:_(\d+))?", layer.name)
        if m:
            config["name"] = f"{m[1]}_{int(m[2] or 0) + by}"
        return layer.__class__.from_config(config)

    shifted = keras.models.clone_model(model, clone_function=clone)
    shifted.set_weights(model.get_weights())
    return shifted


def test_a_keras_model_numbered_on_from_another_is_read_by_its_fresh_names_and_a_fault_still_found():
    """a = a user's Keras model of SMALL whose auto-named layers were numbered on from another model's
    (`conv2d_57` where a fresh process has `conv2d`: keras.applications' InceptionV3 built second in a
    process); b = SMALL built natively with a's weights. It is read under its fresh-process names (and
    says so); a ReLU dropped from it (a structural fault: the weights still fit) is found at the tap
    where the same fault in the freshly named model is found."""
    from equiv.testing import NotEquivalentError, assert_equivalent

    ad = adapter("keras")
    fresh = ad.build(SMALL)
    ad.load_params(SMALL, fresh, W.random_params(SMALL, 3))
    user = _numbered_on(fresh, 57)
    assert "conv2d_57" in {layer.name for layer in user.layers} and "conv2d" not in {l.name for l in user.layers}
    report = assert_equivalent(user, SMALL, input_size=SIZE, batch=1)
    assert any("numbered on from another model's" in n for n in report.notes), report.notes

    def fault(model, layer):
        import keras

        model.get_layer(layer).activation = keras.activations.linear
        with pytest.raises(NotEquivalentError) as err:
            assert_equivalent(model, SMALL, input_size=SIZE, batch=1)
        return err.value.report.first.name

    found = fault(user, "activation_60")  # the fourth conv's ReLU: activation_3 in a fresh process
    assert found == fault(fresh, "activation_3") and found != "stem/conv1"
