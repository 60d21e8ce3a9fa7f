"""The ResNet family's numpy reference: any description, straight from its fields.

It is slow and needs no framework. equiv.reference chains its segments (the forward pass and
`--isolated` runs), and equiv.weights runs it to calibrate BatchNorm statistics.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet
from equiv.reference import BatchNorm, Conv2d, Segment, _windows, avg_pool, conv2d, max_pool, relu, softmax


def head_features(v: ResNet, h: np.ndarray) -> np.ndarray:
    """The "pool" tap: a global mean, or an average pool flattened in NHWC order."""
    if not v.head_pool:
        return h.mean(axis=(1, 2))
    return avg_pool(h, v.head_pool, v.head_pool_stride).reshape(h.shape[0], -1)


def avg_down(x: np.ndarray, stride: int, kernel: int = 2) -> np.ndarray:
    """ResNet-D's shortcut pool (ResNet.projection_pool "avg"): windows of `kernel` starting at
    every multiple of `stride` inside the input (ceil(n / stride) of them per axis), each averaged
    over its elements inside the input only: torch's AvgPool2d(kernel, stride, ceil_mode=True,
    count_include_pad=False) with no padding, for stride >= kernel (timm's avg_down: 2 and 2), and
    TensorFlow's SAME average pool, which pads after only and does not count the padding."""
    n, m = x.shape[1:3]
    oh, ow = -(-n // stride), -(-m // stride)
    ph, pw = max((oh - 1) * stride + kernel - n, 0), max((ow - 1) * stride + kernel - m, 0)
    pad = ((0, 0), (0, ph), (0, pw), (0, 0))
    total = _windows(np.pad(x, pad), kernel, stride).sum(axis=(4, 5))[:, :oh, :ow]
    count = _windows(np.pad(np.ones((1, n, m, 1), x.dtype), pad), kernel, stride).sum(axis=(4, 5))[:, :oh, :ow]
    return total / count


def inference_bn(v: ResNet, params: Mapping[str, np.ndarray]) -> BatchNorm:
    def bn(prefix: str, x: np.ndarray) -> np.ndarray:
        mean, var = params[f"{prefix}/moving_mean"], params[f"{prefix}/moving_variance"]
        y = (x - mean) / np.sqrt(var + v.bn_epsilon)
        if v.bn_scale:
            y = y * params[f"{prefix}/gamma"]
        return y + params[f"{prefix}/beta"]
    return bn


def segments(v: ResNet, params: Mapping[str, np.ndarray], *, bn: BatchNorm | None = None,
             dtype=np.float64, convolve: Conv2d = conv2d) -> list[Segment]:
    """The network as a chain of segments (see equiv.reference.segments)."""
    p = {k: np.asarray(a, dtype) for k, a in params.items()}
    bn = bn or inference_bn(v, p)  # p, not params: statistics in `dtype` too
    if v.norm == "group":  # no statistics to use or calibrate
        bn = group_norm(v, p)

    def conv(c: plan.Conv, h: np.ndarray) -> np.ndarray:
        kernel = standardized(p[f"{c.name}/kernel"], v.ws_epsilon) if v.weight_std else p[f"{c.name}/kernel"]
        if c.groups == 1:
            h = convolve(h, kernel, c.stride, c.padding, p.get(f"{c.name}/bias"))
        else:  # each group of input channels through its own slice of output channels
            ins, kernels = np.split(h, c.groups, axis=-1), np.split(kernel, c.groups, axis=-1)
            h = np.concatenate([convolve(a, k, c.stride, c.padding) for a, k in zip(ins, kernels)], axis=-1)
            h = h + p[f"{c.name}/bias"] if f"{c.name}/bias" in p else h
        if c.norm:
            h = bn(f"{c.name}/bn", h)
        return relu(h) if c.relu else h

    def unit_fn(unit: plan.Unit):
        def fn(h: np.ndarray) -> dict[str, np.ndarray]:
            taps = {}
            branch_in = identity = h
            if v.preact:
                branch_in = bn(f"{unit.name}/preact", h)
                branch_in = taps[f"{unit.name}/preact"] = relu(branch_in) if v.preact_relu else branch_in
                if v.identity_from == "preact":
                    identity = branch_in
            if unit.shortcut:
                into = branch_in if v.preact else h
                shortcut = conv(unit.shortcut, avg_down(into, unit.stride) if unit.avg_down else into)
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

    def stem(x: np.ndarray) -> dict[str, np.ndarray]:
        taps, h = {}, np.asarray(x, dtype)
        for c in plan.stem_convs(v):  # one conv, or a deep stem's
            h = taps[c.name] = conv(c, h)
        return taps

    last = plan.stem(v).name
    segs: list[Segment] = [
        (last, None, stem),
        ("stem/pool", last, lambda h: {"stem/pool": max_pool(
            h, v.pool_kernel, v.pool_stride, v.pool_padding, v.pool_pad_value)}),
    ]
    prev = "stem/pool"
    for unit in plan.units(v):
        segs.append((unit.name, prev, unit_fn(unit)))
        prev = unit.name
    if v.preact:
        segs.append(("post", prev, lambda h: {"post": relu(bn("post", h))}))
        prev = "post"
    if not plan.has_pool(v):  # a backbone: its last stage is its output
        return segs
    segs.append(("pool", prev, lambda h: {"pool": head_features(v, h)}))
    if not plan.has_classifier(v):
        return segs
    if v.head_activation == "softmax":
        segs.append(("probs", "pool", lambda h: {"probs": softmax(h @ p["logits/kernel"] + p["logits/bias"])}))
    else:
        segs.append(("logits", "pool", lambda h: {"logits": h @ p["logits/kernel"] + p["logits/bias"]}))
    return segs


# Issue 16 B: normalisation, weight standardisation and heads


def standardized(kernel: np.ndarray, eps: float) -> np.ndarray:
    """A weight-standardised HWIO kernel: per output channel, (w - mean) / sqrt(var + eps) over
    its k*k*cin weights, with the biased variance (timm's StdConv2d)."""
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    var = ((kernel - mean) ** 2).mean(axis=(0, 1, 2), keepdims=True)
    return (kernel - mean) / np.sqrt(var + eps)


def group_norm(v: ResNet, params: Mapping[str, np.ndarray]) -> BatchNorm:
    """GroupNorm of NHWC maps: v.norm_groups groups of consecutive channels, each normalised over
    its channels and the spatial axes (biased variance, epsilon v.bn_epsilon), then gamma and beta."""
    def gn(prefix: str, x: np.ndarray) -> np.ndarray:
        n, h, w, c = x.shape
        g = x.reshape(n, h, w, v.norm_groups, c // v.norm_groups)
        mean = g.mean(axis=(1, 2, 4), keepdims=True)
        var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
        y = ((g - mean) / np.sqrt(var + v.bn_epsilon)).reshape(n, h, w, c)
        if v.bn_scale:
            y = y * params[f"{prefix}/gamma"]
        return y + params[f"{prefix}/beta"]
    return gn
