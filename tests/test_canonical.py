import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from equiv import canonical as C
from equiv import variants as V
from equiv.errors import ParamMismatchError
from equiv.families.resnet import plan as P
from tests.contract import repeat_marks

# Counts published by the frameworks themselves (model summaries / torchvision docs).
TRAINABLE = {
    "torchvision/resnet18": 11_689_512,
    "torchvision/resnet50": 25_557_032,
    "torchvision/resnet152": 60_192_808,
    "keras/ResNet50": 25_583_592,
    "keras/ResNet50V2": 25_568_360,
    # Issue 16 A: torchvision's docs (num_params of each weights' meta), timm's model table
    "torchvision/resnext50_32x4d": 25_028_904,
    "torchvision/resnext101_32x8d": 88_791_336,
    "torchvision/wide_resnet50_2": 68_883_240,
    "timm/resnet50d": 25_576_264,
    # issue 16 B: sum(p.numel() for p in model.parameters()) of timm 1.0.31's and transformers 5.24.0's
    # own modules (timm's model card: 25.5 M), and keras-hub 0.32's trainable weights
    "timm/resnetv2_50": 25_549_352,
    "timm/resnetv2_50x1_bit": 25_549_352,
    "hf/resnet-50": 25_557_032,
    "hf/resnet-50-features": 23_508_032,
    "keras_hub/resnet_50": 25_557_032,
    "keras_hub/resnet_v2_50": 25_549_352,
}


@pytest.mark.parametrize("name", list(TRAINABLE))
def test_trainable_parameter_counts_match_published(name):
    v = V.get(name)
    shapes = C.param_shapes(v)
    trainable = sum(math.prod(s) for k, s in shapes.items() if "moving" not in k)
    assert trainable == TRAINABLE[name]


def test_slim_v2_50_has_272_parameter_tensors():
    assert len(C.param_shapes(V.get("slim/resnet_v2_50"))) == 272


@pytest.mark.parametrize("v", [v for v in V.all_variants() if v.family == "resnet"], ids=lambda v: v.name)
def test_taps_are_unique_and_ordered(v):
    taps = C.tap_names(v)
    assert len(taps) == len(set(taps))
    stem = [c.name for c in P.stem_convs(v)]  # stem/conv, or a deep stem's stem/conv1 .. (issue 16 A)
    assert stem == (["stem/conv"] if not v.deep_stem else [f"stem/conv{k}" for k in range(1, len(v.deep_stem) + 2)])
    assert taps[:len(stem) + 1] == [*stem, "stem/pool"] and taps[-1] == C.output_tap(v)
    head = C.head_taps(v)  # pool and the output; pool alone (headless); none (a backbone)
    assert taps[len(taps) - len(head):] == head and head[:1] in (["pool"], [])


def test_stride_placement():
    tv = P.units(V.get("torchvision/resnet50"))
    slim = P.units(V.get("slim/resnet_v1_50"))
    k1 = P.units(V.get("keras/ResNet50"))
    assert [u.stride for u in tv if u.stage == 2] == [2, 1, 1, 1]
    assert [u.stride for u in slim if u.stage == 1] == [1, 1, 2]
    assert tv[3].convs[1].stride == 2 and k1[3].convs[0].stride == 2  # 3x3 vs first 1x1


@given(n=st.integers(1, 300), k=st.integers(1, 7), s=st.integers(1, 3))
def test_tf_same_matches_tensorflow_formula(n, k, s):
    before, after = C.pad_amounts("tf_same", n, k, s)
    out = C.output_size("tf_same", n, k, s)
    assert out == math.ceil(n / s)  # TF's SAME output size
    assert after - before in (0, 1) and before >= 0


def test_tf_same_pads_after_on_even_sizes():
    assert C.pad_amounts("tf_same", 112, 3, 2) == (0, 1)
    assert C.pad_amounts("tf_same", 113, 3, 2) == (1, 1)
    assert C.pad_amounts("symmetric", 112, 3, 2) == (1, 1)


def test_check_params_reports_each_problem():
    v = V.get("torchvision/resnet18")
    good = {k: np.zeros(s, np.float32) for k, s in C.param_shapes(v).items()}
    C.check_params(v, good)
    bad = dict(good)
    del bad["stem/conv/kernel"]
    bad["extra/kernel"] = np.zeros(1)
    bad["logits/kernel"] = np.zeros((10, 512))
    with pytest.raises(ParamMismatchError) as e:
        C.check_params(v, bad, source="w.pt")
    err = e.value
    assert err.missing == ["stem/conv/kernel"] and err.unexpected == ["extra/kernel"]
    assert err.mismatched == [("logits/kernel", (512, 1000), (10, 512))]
    assert "w.pt" in str(err) and "logits/kernel expected (512, 1000), found (10, 512)" in str(err)


def test_flops_of_resnet50_match_the_literature():
    # torchvision reports 4.09 GMACs for resnet50 at 224x224.
    assert abs(C.flops(V.get("torchvision/resnet50"), 224, 224) / 2e9 - 4.09) < 0.01


# depth repeats the same rules: the 101/152-layer variants add weight-making time, not cases
@pytest.mark.parametrize("v", [pytest.param(v, marks=repeat_marks(v)) for v in V.all_variants()
                               if v.family == "resnet" and not v.input_size and C.unit_count(v) <= 16],
                         ids=lambda v: v.name)
def test_tap_shapes_are_what_the_reference_computes(v):
    """The plan's shapes (used for memory and FLOPs) against the numpy reference's actual taps,
    at an odd by even size where every padding rule shows."""
    from equiv import reference, weights

    h, w = C.min_input_size(v) + 1, C.min_input_size(v) + 4
    taps = reference.forward(v, weights.random_params(v, 0), weights.random_input(v, 1, h, w))
    assert {t: a.shape[1:] for t, a in taps.items()} == C.tap_shapes(v, h, w)


@pytest.mark.parametrize("shape", [(3, 5, 7, 2), (130, 70, 3, 3), (1, 1, 1, 1), (65, 3, 7, 7), (2048, 129, 1, 1)])
def test_tiled_layout_transposes_equal_numpys_plain_ones(shape):
    """equiv.canonical's tile-by-tile copies against numpy's own transpose, bit for bit, at shapes that
    are not multiples of the tile (and the 2-D transpose the torch adapter uses for dense kernels)."""
    rng = np.random.default_rng(0)
    k = rng.standard_normal(shape).astype(np.float32)
    assert C.oihw_to_hwio(k).tobytes() == np.ascontiguousarray(k.transpose(2, 3, 1, 0)).tobytes()
    assert C.hwio_to_oihw(k).tobytes() == np.ascontiguousarray(k.transpose(3, 2, 0, 1)).tobytes()
    m = k.reshape(shape[0], -1)
    assert C.transposed(m).tobytes() == np.ascontiguousarray(m.T).tobytes()
