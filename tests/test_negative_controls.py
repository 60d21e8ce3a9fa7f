"""The harness can fail: planted faults are caught and named at the right tap."""

import numpy as np
import pytest

from equiv import canonical as C
from equiv import compare
from equiv import variants as V
from equiv import weights as W
from equiv.families.resnet import plan as P
from equiv.frameworks import FRAMEWORKS, adapter


def run(fw, v, params, x):
    ad = adapter(fw)
    m = ad.build(v)
    ad.load_params(v, m, params)
    out = ad.run(v, m, x)
    if hasattr(m, "close"):
        m.close()
    return out


def first_bad(v, outputs):
    results = compare.compare_taps(outputs, C.tap_names(v), compare.tap_tolerances(v))
    first = compare.first_divergence(results)
    return first.name if first else None


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_transposed_kernel_is_caught_at_its_conv(fw):
    v = V.get("slim/resnet_v2_50")
    params = W.random_params(v, 0)
    x = W.random_input(v, 1, 40, 40)
    bad = dict(params)
    k = params["stage2/unit2/conv2/kernel"]
    bad["stage2/unit2/conv2/kernel"] = np.ascontiguousarray(k.transpose(1, 0, 2, 3))  # H and W swapped
    good_out = run("torch" if fw != "torch" else "keras", v, params, x)
    assert first_bad(v, {"good": good_out, fw: run(fw, v, bad, x)}) == "stage2/unit2/conv2"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_changed_epsilon_is_caught_at_the_first_batchnorm(fw):
    v = V.get("torchvision/resnet50")
    params = W.random_params(v, 0)
    x = W.random_input(v, 1, 40, 40)
    other = "keras" if fw == "torch" else "torch"
    outputs = {other: run(other, v, params, x), fw: run(fw, v.replace(bn_epsilon=1e-3), params, x)}
    assert first_bad(v, outputs) == "stem/conv"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_symmetric_pad_where_tf_pads_asymmetrically_is_caught(fw):
    v = V.get("torchvision/resnet18").replace(conv_padding="tf_same")
    params = W.random_params(v, 0)
    x = W.random_input(v, 1, 64, 64)  # even sizes: TF SAME pads (0, 1), symmetric (1, 1)
    other = "keras" if fw == "torch" else "torch"
    outputs = {other: run(other, v, params, x),
               fw: run(fw, v.replace(conv_padding="symmetric"), params, x)}
    # the first strided 3x3 conv: the first unit of stage 2 (stride on conv1 in a basic block)
    assert first_bad(v, outputs) == "stage2/unit1/conv1"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_minus_inf_pool_padding_where_keras_pads_zeros_is_caught(fw):
    # keras.applications' v2 stem: ZeroPadding2D then a VALID max-pool, after a conv with no ReLU,
    # so its negative values meet the zeros at the border; -inf padding keeps them
    v = V.get("keras/ResNet50V2").replace(depths=(1, 1, 1, 1), reference=None)
    params = W.random_params(v, 0)
    x = W.random_input(v, 1, 40, 40)
    other = "keras" if fw == "torch" else "torch"
    outputs = {other: run(other, v, params, x), fw: run(fw, v.replace(pool_pad_value="-inf"), params, x)}
    assert first_bad(v, outputs) == "stem/pool"


def test_odd_sizes_hide_the_asymmetric_pad():
    # Why the property tests draw even sizes as well as odd ones: on odd sizes the rules coincide.
    v = V.get("torchvision/resnet18").replace(conv_padding="tf_same")
    sizes = P.spatial_sizes(v, 65)  # [stem, pool, stage1..stage4] = 33, 17, 17, 9, 5, 3
    strided_inputs = sizes[2:5]  # what the strided convs of stages 2-4 see
    assert all(C.pad_amounts("tf_same", n, 3, 2) == C.pad_amounts("symmetric", n, 3, 2) for n in strided_inputs)
    params = W.random_params(v, 0)
    x = W.random_input(v, 1, 65, 65)
    outputs = {"torch": run("torch", v, params, x),
               "keras": run("keras", v.replace(conv_padding="symmetric"), params, x)}
    assert first_bad(v, outputs) is None
