"""The ResNet family's numpy reference: any description, straight from its fields.

It is slow and needs no framework. equiv.reference chains its segments (the forward pass and
`--isolated` runs), and equiv.weights runs it to calibrate BatchNorm statistics.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet
from equiv.reference import BatchNorm, Conv2d, Segment, avg_pool, conv2d, max_pool, relu, softmax


def head_features(v: ResNet, h: np.ndarray) -> np.ndarray:
    """The "pool" tap: a global mean, or an average pool flattened in NHWC order."""
    if not v.head_pool:
        return h.mean(axis=(1, 2))
    return avg_pool(h, v.head_pool, v.head_pool_stride).reshape(h.shape[0], -1)


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
        h = convolve(h, kernel, c.stride, c.padding, p.get(f"{c.name}/bias"))
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
        ("stem/conv", None, lambda x: {"stem/conv": conv(plan.stem(v), np.asarray(x, dtype))}),
        ("stem/pool", "stem/conv", lambda h: {"stem/pool": max_pool(
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
