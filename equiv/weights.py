"""Random weights that behave like trained ones, deterministic from a seed.

Kernels are He-scaled. BatchNorm statistics are then calibrated, layer by layer in network
order, on a small random batch pushed through the numpy reference: each moving mean and
variance is set (with a little noise) to what that BatchNorm actually sees. So every
normalised activation is of order one through the whole depth, as in a trained network,
and an error at depth means something. The last BatchNorm of each residual branch gets a
small gamma (a v2 branch's last conv a small kernel), as trained ResNets have, so the
residual stream grows slowly with depth.
"""

from __future__ import annotations

import functools
import hashlib
import operator

import numpy as np

from equiv import canonical as C
from equiv import families, reference
from equiv.errors import EquivError
from equiv.variants import Variant

CALIBRATION_BATCH = 4
# Names the algorithm: bump it with any change that changes the weights of a (variant, seed), so
# that a golden file made with another generator is told apart from a machine that computes
# differently (which must never happen: see the exact calibration below).
GENERATOR = "he-exact-calibration/2"


def calibration_size(v: Variant) -> int:
    """The side of the calibration batch: the family's own choice where it has one (its
    `calibration_size`: Inception's last maps are 1x1 at its smallest input), else 48 or more."""
    own = getattr(families.of(v), "calibration_size", None)
    return own(v) if own is not None else max(C.min_body_size(v), 48)


# The calibration runs in float64 on dyadic grids, so that every sum in it is exact and the
# statistics do not depend on the order in which a BLAS kernel, its threads or FMA add terms up
# (which varies with the CPU): the weights are the same bits on any machine, by construction.
#
# Why the sums are exact: a conv input is rounded to a multiple of 2**-ACT_BITS with |x| <= ACT_MAX,
# the calibration copy of a kernel to a multiple of 2**-KERNEL_BITS with |w| <= kernel_limit(terms).
# Every product x*w is then an integer number of units u = 2**-(ACT_BITS + KERNEL_BITS), and a conv
# of `terms` products (kernel volume k*k*cin) has partial sums, in whatever order and grouping, of at
# most terms * ACT_MAX * kernel_limit(terms) / u <= 2**53 units: integers exactly representable in
# float64, so each addition (and each FMA) is exact. kernel_limit is 2**14 / terms: at least
# KERNEL_MAX = 2 up to 2**13 terms (3*3*512 = 4608, the ResNets of tf_slim.nets, keras.applications
# and torchvision's resnetNN), at least 1 for the largest conv allowed (TERMS_MAX = 2**14; the largest
# registered is wide_resnet50_2's 3x3 of 1024 channels, 9216 terms, whose He-scaled kernel (std 0.015)
# stays below 0.1), far more for the small convs of drawn descriptions, whose He-scaled kernels are wide.
# The BatchNorm statistics are sums of integers (int64, checked
# against overflow) and one correctly rounded division each. Everything else is elementwise IEEE
# arithmetic (+ - * / sqrt, max, rint: correctly rounded in every SIMD path), never a
# transcendental function. `_units` raises, never rounds silently, when a value is out of bounds.
# The measured maxima: |conv input| <= 34, |kernel| <= 0.8 over all registered variants (seed 0).
ACT_BITS, ACT_MAX = 12, 2.0 ** 8
KERNEL_BITS, KERNEL_MAX = 19, 2.0 ** 1
TERMS_MAX = 2 ** 14
EXACT = 2.0 ** 53
assert (TERMS_MAX // 2) * ACT_MAX * 2.0 ** ACT_BITS * KERNEL_MAX * 2.0 ** KERNEL_BITS <= EXACT  # kernel_limit(2**13)
assert EXACT / (TERMS_MAX * ACT_MAX * 2.0 ** (ACT_BITS + KERNEL_BITS)) >= 1.0  # kernel_limit(TERMS_MAX)


class CalibrationRangeError(ArithmeticError):
    """A value of the calibration is outside the bounds that make its sums exact."""


def _units(a: np.ndarray, bits: int, limit: float, what: str) -> np.ndarray:
    """`a` rounded to a multiple of 2**-bits, in those units (integers held in float64)."""
    a = np.asarray(a, np.float64)
    peak = float(np.abs(a).max(initial=0.0))
    if not peak <= limit:  # NaN too
        raise CalibrationRangeError(f"{what}: |value| {peak:.3g} exceeds the exact calibration's bound {limit:g}")
    return np.rint(a * 2.0 ** bits)


def exact_conv2d(x, kernel, stride, rule, bias=None, *, conv2d: reference.Conv2d = reference.conv2d):
    """`conv2d` of `x` rounded onto the activation grid with an on-grid kernel: every sum exact.

    `conv2d` computes the integer-valued float64 product sums (the reference's BLAS matrix product
    by default; tests pass one that never calls a BLAS)."""
    terms = int(np.prod(kernel.shape[:-1]))
    if terms > TERMS_MAX:
        raise CalibrationRangeError(f"a convolution of {terms} terms exceeds the exact calibration's {TERMS_MAX}")
    xu = _units(x, ACT_BITS, ACT_MAX, "a convolution's input")
    wu = np.asarray(kernel, np.float64) * 2.0 ** KERNEL_BITS
    if not np.array_equal(wu, np.rint(wu)):  # pragma: no cover - _calibration_kernels made them so
        raise CalibrationRangeError("a calibration kernel is not on its grid")
    if not float(np.abs(wu).max(initial=0.0)) * 2.0 ** -KERNEL_BITS <= kernel_limit(terms):  # pragma: no cover
        raise CalibrationRangeError(f"a calibration kernel exceeds {kernel_limit(terms):g} for {terms} terms")
    y = conv2d(xu, wu, stride, rule) * 2.0 ** -(ACT_BITS + KERNEL_BITS)  # exact: a power of two
    return y + bias if bias is not None else y


def kernel_limit(terms: int) -> float:
    """The largest |w| for which a conv of `terms` products of on-grid inputs sums exactly."""
    return EXACT / (terms * ACT_MAX * 2.0 ** ACT_BITS * 2.0 ** KERNEL_BITS)


def _calibration_kernels(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters with each conv kernel rounded onto the kernel grid (float64); only the
    calibration uses these, the weights keep their float32 kernels."""
    out = dict(params)
    for name, a in params.items():
        terms = int(np.prod(a.shape[:-1]))
        # A kernel of more terms than any exact conv takes is a dense head's (VGG's fc6), which
        # the calibration never reaches: left as it is, rather than copied and rounded.
        if name.endswith("/kernel") and terms <= TERMS_MAX:
            out[name] = _units(a, KERNEL_BITS, kernel_limit(terms), name) * 2.0 ** -KERNEL_BITS
    return out


def exact_moments(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (last axis) mean and population variance of `h` rounded onto the activation
    grid, each the correctly rounded value of the exact one (integer sums, one division)."""
    hu = _units(h, ACT_BITS, ACT_MAX, "a BatchNorm's input").reshape(-1, h.shape[-1])
    n = hu.shape[0]
    if n * float(np.abs(hu).max(initial=0.0)) ** 2 >= 2.0 ** 63:  # pragma: no cover - far from it
        raise CalibrationRangeError(f"BatchNorm statistics of {n} values would overflow int64")
    q = hu.astype(np.int64)
    s1, s2 = q.sum(axis=0).tolist(), (q * q).sum(axis=0).tolist()  # integer sums: any order is exact
    unit = 2 ** ACT_BITS
    # Python int / int is correctly rounded.
    mean = [a / (n * unit) for a in s1]
    var = [(n * b - a * a) / (n * n * unit * unit) for a, b in zip(s1, s2)]
    return np.array(mean), np.array(var)


def _calibrate(v: Variant, params: dict[str, np.ndarray], rng: np.random.Generator,
               conv2d: reference.Conv2d = reference.conv2d) -> None:
    if not any(name.endswith("/moving_mean") for name in params):
        return  # no BatchNorm to calibrate (a VGG without one): nothing to run
    size = calibration_size(v)
    x = rng.standard_normal((CALIBRATION_BATCH, size, size, v.in_channels)).astype(np.float32)
    base = reference.inference_bn(v, params)

    def measuring_bn(prefix: str, h: np.ndarray) -> np.ndarray:
        mean, var = exact_moments(h)
        # A little noise so that mean and variance are not exactly the batch's.
        params[f"{prefix}/moving_mean"] = (mean + rng.normal(0, 0.05, mean.shape) * np.sqrt(var)).astype(np.float32)
        params[f"{prefix}/moving_variance"] = (var * rng.uniform(0.8, 1.25, var.shape) + 1e-3).astype(np.float32)
        return base(prefix, h)

    def convolve(h, kernel, stride, rule, bias=None):
        # A weight-standardised kernel is computed from the on-grid one: back onto the grid (every
        # other kernel is on it already, and rounding leaves it as it is).
        terms = int(np.prod(kernel.shape[:-1]))
        kernel = _units(kernel, KERNEL_BITS, kernel_limit(terms), "a standardised kernel") * 2.0 ** -KERNEL_BITS
        return exact_conv2d(h, kernel, stride, rule, bias, conv2d=conv2d)

    # Up to the head, which has no BatchNorm (and may take only one input size).
    head, taps = set(C.head_taps(v)), {}
    for out, src, fn in reference.segments(v, _calibration_kernels(params), bn=measuring_bn,
                                           dtype=np.float64, convolve=convolve):
        if out in head:
            break
        taps.update(fn(x if src is None else taps[src]))


def _make(v: Variant, seed: int, conv2d: reference.Conv2d = reference.conv2d,
          blas_threads: int = 1) -> dict[str, np.ndarray]:
    """The parameters; `conv2d` computes the calibration's exact product sums (see exact_conv2d).

    The calibration's products are small (a batch of 4 at 48x48): BLAS threads cost more than they
    give there, up to 10x more on a machine whose cores other jobs share. One thread by default; the
    sums are exact, so the bits are the same with any number (tests/test_weights.py tries two)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    params = families.of(v).initial_params(v, rng)
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        _calibrate(v, params, rng, conv2d)
    return params


@functools.lru_cache(maxsize=2)  # a 152-layer set is 240 MB
def _cached(v: Variant, seed: int) -> tuple[tuple[str, np.ndarray], ...]:
    params = _make(v, seed)
    for a in params.values():
        a.setflags(write=False)
    return tuple(params.items())


def check_seed(seed) -> int:
    """A seed is a non-negative integer (numpy's generators refuse others, and too late: after a
    port has written its file)."""
    try:
        n = operator.index(seed)
    except TypeError:
        raise EquivError(f"`seed={seed!r}` must be a non-negative integer") from None
    if n < 0:
        raise EquivError(f"`seed={n}` must be a non-negative integer")
    return n


def random_params(v: Variant, seed: int = 0, *, cache: bool = True) -> dict[str, np.ndarray]:
    """Canonical float32 parameters for `v`, the same for the same (variant, seed).

    `cache=False` makes them afresh and keeps no copy (a one-off check of a 152-layer variant
    then holds 240 MB less)."""
    if not cache:
        return _make(v, seed)
    return {k: a.copy() for k, a in _cached(v, seed)}


def digest(v: Variant, params: dict[str, np.ndarray]) -> str:
    """SHA-256 of the parameters' float32 bytes in canonical order: equal iff the same bits."""
    h = hashlib.sha256()
    for name in C.param_shapes(v):
        h.update(name.encode() + b"\0" + np.ascontiguousarray(params[name], np.float32).tobytes())
    return h.hexdigest()


def random_input(v: Variant, batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A NHWC float32 batch of roughly unit scale (like normalised images)."""
    rng = np.random.default_rng([seed, 1])
    return rng.standard_normal((batch, height, width, v.in_channels)).astype(np.float32)
