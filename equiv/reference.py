"""A plain numpy forward pass of any variant, straight from its description.

It is slow and needs no framework. It serves two purposes: calibrating random BatchNorm
statistics (`equiv.weights`), and acting as a fourth, independent implementation in tests, so
that a convention realised the same wrong way in every framework adapter is still caught.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from equiv import canonical as C
from equiv.variants import Variant


def _pad(x: np.ndarray, rule: str, kernel: int, stride: int, value: float) -> np.ndarray:
    (t, b), (l, r) = (C.pad_amounts(rule, x.shape[1], kernel, stride),
                      C.pad_amounts(rule, x.shape[2], kernel, stride))
    if t == b == l == r == 0:
        return x
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    w = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(1, 2))
    return w[:, ::stride, ::stride]  # (N, Ho, Wo, C, k, k)


def conv2d(x, kernel, stride, rule, bias=None):
    k = kernel.shape[0]
    w = _windows(_pad(x, rule, k, stride, 0.0), k, stride)
    n, ho, wo, c = w.shape[:4]
    cols = w.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, k * k * c)
    y = (cols @ kernel.reshape(k * k * c, -1)).reshape(n, ho, wo, -1)
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


def head_features(v: Variant, h: np.ndarray) -> np.ndarray:
    """The "pool" tap: a global mean, or an average pool flattened in NHWC order."""
    if not v.head_pool:
        return h.mean(axis=(1, 2))
    return avg_pool(h, v.head_pool, v.head_pool_stride).reshape(h.shape[0], -1)


# A BatchNorm hook: (layer prefix, input) -> output. The default applies stored statistics;
# calibration passes one that measures them first.
BatchNorm = Callable[[str, np.ndarray], np.ndarray]


def inference_bn(v: Variant, params: Mapping[str, np.ndarray]) -> BatchNorm:
    def bn(prefix: str, x: np.ndarray) -> np.ndarray:
        mean, var = params[f"{prefix}/moving_mean"], params[f"{prefix}/moving_variance"]
        y = (x - mean) / np.sqrt(var + v.bn_epsilon)
        if v.bn_scale:
            y = y * params[f"{prefix}/gamma"]
        return y + params[f"{prefix}/beta"]
    return bn


Segment = tuple[str, str | None, Callable[[np.ndarray], dict[str, np.ndarray]]]


# A convolution: (input NHWC, kernel HWIO, stride, padding rule, bias or None) -> output.
# The default is `conv2d`; calibration passes one that proves its sums exact.
Conv2d = Callable[..., np.ndarray]


def segments(v: Variant, params: Mapping[str, np.ndarray], *, bn: BatchNorm | None = None,
             dtype=np.float64, convolve: Conv2d = conv2d) -> list[Segment]:
    """The network as a chain of segments: (output tap, input tap or None for the image, fn).

    `fn(input)` returns every tap the segment produces, its output tap last. Chaining them is
    the forward pass; running one on another implementation's input isolates its error.
    """
    p = {k: np.asarray(a, dtype) for k, a in params.items()}
    bn = bn or inference_bn(v, p)  # p, not params: statistics in `dtype` too

    def conv(c: C.Conv, h: np.ndarray) -> np.ndarray:
        h = convolve(h, p[f"{c.name}/kernel"], c.stride, c.padding, p.get(f"{c.name}/bias"))
        if c.norm:
            h = bn(f"{c.name}/bn", h)
        return relu(h) if c.relu else h

    def unit_fn(unit: C.Unit):
        def fn(h: np.ndarray) -> dict[str, np.ndarray]:
            taps = {}
            branch_in = identity = h
            if v.preact:
                branch_in = bn(f"{unit.name}/preact", h)
                branch_in = taps[f"{unit.name}/preact"] = relu(branch_in) if v.preact_relu else branch_in
                if v.identity_from == "preact":
                    identity = branch_in
            if unit.shortcut:
                shortcut = conv(unit.shortcut, branch_in if v.preact else h)
            else:
                shortcut = identity[:, ::unit.stride, ::unit.stride]
            taps[f"{unit.name}/shortcut"] = shortcut
            r = branch_in
            for c in unit.convs:
                r = taps[c.name] = conv(c, r)
            out = shortcut + r
            taps[unit.name] = out if v.preact else relu(out)
            return taps
        return fn

    segs: list[Segment] = [
        ("stem/conv", None, lambda x: {"stem/conv": conv(C.stem(v), np.asarray(x, dtype))}),
        ("stem/pool", "stem/conv", lambda h: {"stem/pool": max_pool(
            h, v.pool_kernel, v.pool_stride, v.pool_padding, v.pool_pad_value)}),
    ]
    prev = "stem/pool"
    for unit in C.units(v):
        segs.append((unit.name, prev, unit_fn(unit)))
        prev = unit.name
    if v.preact:
        segs.append(("post", prev, lambda h: {"post": relu(bn("post", h))}))
        prev = "post"
    segs.append(("pool", prev, lambda h: {"pool": head_features(v, h)}))
    if v.head_activation == "softmax":
        segs.append(("probs", "pool", lambda h: {"probs": softmax(h @ p["logits/kernel"] + p["logits/bias"])}))
    else:
        segs.append(("logits", "pool", lambda h: {"logits": h @ p["logits/kernel"] + p["logits/bias"]}))
    return segs


def forward(v: Variant, params: Mapping[str, np.ndarray], x: np.ndarray, *,
            bn: BatchNorm | None = None, dtype=np.float64) -> dict[str, np.ndarray]:
    """Every tap of `v` on NHWC input `x`, computed in `dtype` (float64 by default)."""
    taps: dict[str, np.ndarray] = {}
    for _, src, fn in segments(v, params, bn=bn, dtype=dtype):
        taps.update(fn(x if src is None else taps[src]))
    return taps
