"""The seeded weights are the same bits on any machine: their BatchNorm calibration adds only
exact sums, so neither the BLAS kernel, nor its thread count, nor the BLAS itself can change them."""

import numpy as np
import pytest

from equiv import reference as R
from equiv import variants as V
from equiv import weights as W

DEEP = ["slim/resnet_v1_152", "keras/ResNet152V2", "torchvision/resnet152", "slim/resnet_v2_152", "keras/ResNet152"]


def conv2d_without_blas(x, kernel, stride, rule, bias=None):
    """The reference's convolution with its matrix product replaced by einsum's own loops
    (`optimize=False` never hands a contraction to a BLAS)."""
    k = kernel.shape[0]
    w = R._windows(R._pad(x, rule, k, stride, 0.0), k, stride)  # (N, Ho, Wo, C, k, k)
    y = np.einsum("nhwcij,ijco->nhwo", w, kernel, optimize=False)
    return y + bias if bias is not None else y


def make(v, threads=1, conv2d=R.conv2d):
    return W._make(v, 0, conv2d, blas_threads=threads)  # the limit is set around the calibration alone


def assert_same_bits(a, b):
    assert list(a) == list(b)
    differ = [k for k in a if not np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32))]
    assert not differ, f"{len(differ)} parameter(s) differ, first {differ[0]}"


def test_the_einsum_convolution_is_a_convolution():
    """The independent path computes what the reference computes (a check of the check)."""
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((2, 9, 8, 5)), rng.standard_normal((3, 3, 5, 4))
    for stride, rule in ((1, "tf_same"), (2, "tf_same"), (2, "symmetric"), (2, "valid")):
        np.testing.assert_allclose(conv2d_without_blas(x, k, stride, rule), R.conv2d(x, k, stride, rule),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", DEEP[:2] + [pytest.param(n, marks=pytest.mark.slow) for n in DEEP[2:]])
def test_weights_are_the_same_bits_with_one_or_two_blas_threads_or_no_blas(name):
    v = V.get(name)
    one = make(v, threads=1)
    assert_same_bits(one, make(v, threads=2))
    assert_same_bits(one, make(v, conv2d=conv2d_without_blas))


def test_the_calibration_float32_way_depends_on_the_summation_order():
    """Negative control: the same statistics summed in float32 in two orders differ in the last
    bits, which is what the exact calibration removes."""
    h = np.random.default_rng(1).standard_normal((4 * 24 * 24, 64)).astype(np.float32) * 3 + 1
    forward = np.float32(0)
    for row in h[:, 0]:
        forward += row
    assert forward != np.sum(h[:, 0], dtype=np.float32)  # numpy sums pairwise
    # exact moments do not depend on the order of the rows
    m1, v1 = W.exact_moments(h)
    m2, v2 = W.exact_moments(h[::-1].copy())
    assert np.array_equal(m1, m2) and np.array_equal(v1, v2)
    hq = np.rint(h.astype(np.float64) * 2**W.ACT_BITS) / 2**W.ACT_BITS
    np.testing.assert_allclose(m1, hq.mean(axis=0), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(v1, hq.var(axis=0), rtol=1e-12)


def test_a_value_outside_the_exact_bounds_raises_not_rounds():
    x = np.zeros((1, 4, 4, 2))
    k = np.full((3, 3, 2, 1), 2.0 ** -W.KERNEL_BITS)
    x[0, 1, 1, 0] = W.ACT_MAX * 2
    with pytest.raises(W.CalibrationRangeError, match="a convolution's input: \\|value\\| 512 exceeds"):
        W.exact_conv2d(x, k, 1, "tf_same")
    x[0, 1, 1, 0] = np.nan
    with pytest.raises(W.CalibrationRangeError):
        W.exact_conv2d(x, k, 1, "tf_same")
    with pytest.raises(W.CalibrationRangeError, match="convolution of 18432 terms"):  # TERMS_MAX is 2**14
        W.exact_conv2d(np.zeros((1, 4, 4, 2048)), np.zeros((3, 3, 2048, 1)), 1, "tf_same")
    with pytest.raises(W.CalibrationRangeError, match="conv1/kernel: \\|value\\| 5e\\+03 exceeds .* 4096"):
        W._calibration_kernels({"conv1/kernel": np.full((1, 1, 4, 1), 5000.0)})  # 4 terms: at most 2**14 / 4
    with pytest.raises(W.CalibrationRangeError, match="BatchNorm's input"):
        W.exact_moments(np.full((2, 3), 300.0))


def test_exact_conv_is_exact():
    """On the grids, the BLAS product equals the einsum one bit for bit, and both equal the exact
    rational result (computed with Python integers)."""
    rng = np.random.default_rng(2)
    x = np.rint(rng.standard_normal((1, 5, 5, 512)) * 8 * 2**W.ACT_BITS) / 2**W.ACT_BITS
    k = np.rint(rng.standard_normal((3, 3, 512, 3)) * 0.5 * 2**W.KERNEL_BITS) / 2**W.KERNEL_BITS
    a, b = W.exact_conv2d(x, k, 1, "valid"), W.exact_conv2d(x, k, 1, "valid", conv2d=conv2d_without_blas)
    assert np.array_equal(a, b)
    xi = (x * 2**W.ACT_BITS).astype(np.int64)
    ki = (k * 2**W.KERNEL_BITS).astype(np.int64)
    exact = sum(int(p) * int(q) for p, q in zip(xi[0, 1:4, 1:4].reshape(-1), ki[..., 1].reshape(-1)))
    assert a[0, 1, 1, 1] == exact / 2 ** (W.ACT_BITS + W.KERNEL_BITS)


def test_small_convs_take_the_wide_kernels_he_scaling_gives_them():
    """A 1x1 conv of 4 channels has He std 0.71: kernels beyond 2 are common there, and its few
    terms leave the exact sums room for them (kernel_limit); the weights are still order-free."""
    from equiv.families.resnet.description import ResNet

    v = ResNet(name="test/narrow", native="torch", description="test only", block="bottleneck", depths=(2, 2),
                widths=(4, 8), strides=(2, 2), preact=False, stride_unit="last", stride_conv=2,
                projection="channels", shortcut_norm=True, conv_bias="all", conv_padding="tf_same",
                bn_epsilon=1e-3, bn_scale=False, stem_width=8, stem_kernel=4, pool_padding="valid", num_classes=10)
    one = make(v, threads=1)
    widest = max(float(np.abs(a).max()) for k, a in one.items() if k.endswith("/kernel"))
    assert widest > W.KERNEL_MAX  # the case the fixed bound of 2 refused
    assert_same_bits(one, make(v, threads=2))
    assert_same_bits(one, make(v, conv2d=conv2d_without_blas))
    assert W.kernel_limit(3 * 3 * 512) >= W.KERNEL_MAX and W.kernel_limit(4) == 2.0 ** 14 / 4
