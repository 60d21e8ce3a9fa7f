"""The numpy reference against naive loops: an independent path for each primitive."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from equiv import canonical as C
from equiv import reference as R
from equiv import variants as V
from equiv import weights as W


def naive_conv(x, k, stride, rule):
    n, h, w, c = x.shape
    kh = k.shape[0]
    (t, b), (l, r) = C.pad_amounts(rule, h, kh, stride), C.pad_amounts(rule, w, kh, stride)
    xp = np.zeros((n, h + t + b, w + l + r, c))
    xp[:, t:t + h, l:l + w] = x
    ho, wo = (h + t + b - kh) // stride + 1, (w + l + r - kh) // stride + 1
    out = np.zeros((n, ho, wo, k.shape[3]))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kh, :]
            for o in range(k.shape[3]):
                out[:, i, j, o] = (patch * k[:, :, :, o]).sum(axis=(1, 2, 3))
    return out


@given(h=st.integers(3, 12), w=st.integers(3, 12), k=st.sampled_from([1, 3, 5]), s=st.sampled_from([1, 2]),
       rule=st.sampled_from(["symmetric", "tf_same"]), seed=st.integers(0, 1000))
def test_conv_matches_naive_loops(h, w, k, s, rule, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, h, w, 3))
    kern = rng.standard_normal((k, k, 3, 4))
    np.testing.assert_allclose(R.conv2d(x, kern, s, rule), naive_conv(x, kern, s, rule), rtol=1e-10, atol=1e-10)


@given(h=st.integers(3, 12), s=st.sampled_from([1, 2]), rule=st.sampled_from(["valid", "symmetric", "tf_same"]),
       value=st.sampled_from(["-inf", "zero"]), seed=st.integers(0, 1000))
def test_max_pool_matches_naive_loops(h, s, rule, value, seed):
    x = np.random.default_rng(seed).standard_normal((1, h, h, 2)) - 3.0  # mostly negative: pad value matters
    t, b = C.pad_amounts(rule, h, 3, s)
    fill = -np.inf if value == "-inf" else 0.0
    xp = np.full((1, h + t + b, h + t + b, 2), fill)
    xp[:, t:t + h, t:t + h] = x
    ho = (h + t + b - 3) // s + 1
    want = np.array([[[xp[0, i * s:i * s + 3, j * s:j * s + 3, c].max() for c in range(2)]
                      for j in range(ho)] for i in range(ho)])[None]
    np.testing.assert_array_equal(R.max_pool(x, 3, s, rule, value), want)


def test_forward_produces_every_tap_in_order():
    v = V.get("slim/resnet_v2_50")
    taps = R.forward(v, W.random_params(v), W.random_input(v, 1, 33, 33))
    assert list(taps) == C.tap_names(v)
    assert taps["logits"].shape == (1, 1001) and taps["stage4/unit3"].shape == (1, 2, 2, 2048)


def test_weights_are_deterministic_and_calibrated():
    v = V.get("slim/resnet_v1_152")
    a, b = W.random_params(v, 3), W.random_params(v, 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["stem/conv/kernel"], W.random_params(v, 4)["stem/conv/kernel"])
    taps = R.forward(v, a, W.random_input(v, 2, 64, 64, seed=9))
    # Calibrated: normalised activations stay of order one through all 152 layers.
    for name in ("stage1/unit1/conv1", "stage3/unit30/conv2", "stage4/unit3/conv1"):
        assert 0.05 < taps[name].std() < 5, (name, taps[name].std())
    assert np.abs(taps["logits"]).max() < 1e3
