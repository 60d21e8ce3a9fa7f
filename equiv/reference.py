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


def forward(v: Variant, params: Mapping[str, np.ndarray], x: np.ndarray, *,
            bn: BatchNorm | None = None, dtype=np.float64) -> dict[str, np.ndarray]:
    """Every tap of `v` on NHWC input `x`, computed in `dtype` (float64 by default)."""
    bn = bn or inference_bn(v, params)
    p = {k: np.asarray(a, dtype) for k, a in params.items()}
    taps: dict[str, np.ndarray] = {}

    def conv(c: C.Conv, h: np.ndarray) -> np.ndarray:
        h = conv2d(h, p[f"{c.name}/kernel"], c.stride, c.padding, p.get(f"{c.name}/bias"))
        if c.norm:
            h = bn(f"{c.name}/bn", h)
        return relu(h) if c.relu else h

    h = conv(C.stem(v), np.asarray(x, dtype))
    taps["stem/conv"] = h
    h = max_pool(h, v.pool_kernel, v.pool_stride, v.pool_padding, v.pool_pad_value)
    taps["stem/pool"] = h
    for unit in C.units(v):
        branch_in = h
        if v.preact:
            branch_in = relu(bn(f"{unit.name}/preact", h))
            taps[f"{unit.name}/preact"] = branch_in
        if unit.shortcut:
            shortcut = conv(unit.shortcut, branch_in if v.preact else h)
        else:
            shortcut = h[:, ::unit.stride, ::unit.stride]
        taps[f"{unit.name}/shortcut"] = shortcut
        r = branch_in
        for c in unit.convs:
            r = conv(c, r)
            taps[c.name] = r
        h = shortcut + r
        if not v.preact:
            h = relu(h)
        taps[unit.name] = h
    if v.preact:
        h = relu(bn("post", h))
        taps["post"] = h
    pooled = h.mean(axis=(1, 2))
    taps["pool"] = pooled
    taps["logits"] = pooled @ p["logits/kernel"] + p["logits/bias"]
    return taps
