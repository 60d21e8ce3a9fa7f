"""A plain numpy forward pass of any variant, straight from its description.

It is slow and needs no framework. It serves two purposes: calibrating random BatchNorm
statistics (`equiv.weights`), and acting as a fourth, independent implementation in tests, so
that a convention realised the same wrong way in every framework adapter is still caught.

The numpy operations are here; each family's reference (equiv/families/<family>/reference.py)
composes them into segments from its description.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from equiv import canonical as C
from equiv import families
from equiv.variants import Variant


def _pad(x: np.ndarray, rule: str, kernel, stride: int, value: float) -> np.ndarray:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    (t, b), (l, r) = (C.pad_amounts(rule, x.shape[1], kh, stride),
                      C.pad_amounts(rule, x.shape[2], kw, stride))
    if t == b == l == r == 0:
        return x
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kernel, stride: int) -> np.ndarray:
    w = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel) if isinstance(kernel, int) else kernel,
                                                 axis=(1, 2))
    return w[:, ::stride, ::stride]  # (N, Ho, Wo, C, kh, kw)


def conv2d(x, kernel, stride, rule, bias=None):
    """A convolution with a kh x kw HWIO kernel (Inception's 1x7 and 7x1 too)."""
    kh, kw = kernel.shape[:2]
    w = _windows(_pad(x, rule, (kh, kw), stride, 0.0), (kh, kw), stride)
    n, ho, wo, c = w.shape[:4]
    cols = w.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c)
    y = (cols @ kernel.reshape(kh * kw * c, -1)).reshape(n, ho, wo, -1)
    return y + bias if bias is not None else y


def max_pool(x, kernel, stride, rule, pad_value):
    value = -np.inf if pad_value == "-inf" else 0.0
    return _windows(_pad(x, rule, kernel, stride, value), kernel, stride).max(axis=(4, 5))


def relu(x):
    return np.maximum(x, 0)


def avg_pool(x, kernel, stride):
    return _windows(x, kernel, stride).mean(axis=(4, 5))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# A BatchNorm hook: (layer prefix, input) -> output. The default applies stored statistics;
# calibration passes one that measures them first.
BatchNorm = Callable[[str, np.ndarray], np.ndarray]

# (output tap, input tap or None for the image, fn): `fn(input)` returns every tap the segment
# produces, its output tap last.
Segment = tuple[str, str | None, Callable[[np.ndarray], dict[str, np.ndarray]]]

# A convolution: (input NHWC, kernel HWIO, stride, padding rule, bias or None) -> output.
# The default is `conv2d`; calibration passes one that proves its sums exact.
Conv2d = Callable[..., np.ndarray]


def inference_bn(v: Variant, params: Mapping[str, np.ndarray]) -> BatchNorm:
    """BatchNorm with the stored statistics of `params`, as `v`'s family applies it."""
    return families.of(v).reference.inference_bn(v, params)


def segments(v: Variant, params: Mapping[str, np.ndarray], *, bn: BatchNorm | None = None,
             dtype=np.float64, convolve: Conv2d = conv2d) -> list[Segment]:
    """The network as a chain of segments: (output tap, input tap or None for the image, fn).

    Chaining them is the forward pass; running one on another implementation's input isolates
    its error."""
    return families.of(v).reference.segments(v, params, bn=bn, dtype=dtype, convolve=convolve)


def forward(v: Variant, params: Mapping[str, np.ndarray], x: np.ndarray, *,
            bn: BatchNorm | None = None, dtype=np.float64) -> dict[str, np.ndarray]:
    """Every tap of `v` on NHWC input `x`, computed in `dtype` (float64 by default)."""
    taps: dict[str, np.ndarray] = {}
    for _, src, fn in segments(v, params, bn=bn, dtype=dtype):
        taps.update(fn(x if src is None else taps[src]))
    return taps
