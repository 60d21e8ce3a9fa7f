"""The Inception v3 family's numpy reference: any description, straight from its fields."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from equiv import canonical as C
from equiv.families.inception import plan
from equiv.families.inception.description import Inception
from equiv.reference import BatchNorm, Conv2d, Segment, conv2d, max_pool, relu

# torchvision's transform_input: per channel x * std / 0.5 + (mean - 0.5) / 0.5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def inference_bn(v: Inception, params: Mapping[str, np.ndarray]) -> BatchNorm:
    def bn(prefix: str, x: np.ndarray) -> np.ndarray:
        mean, var = params[f"{prefix}/moving_mean"], params[f"{prefix}/moving_variance"]
        y = (x - mean) / np.sqrt(var + v.bn_epsilon)
        if f"{prefix}/gamma" in params:
            y = y * params[f"{prefix}/gamma"]
        return y + params[f"{prefix}/beta"]
    return bn


def transform_input(x: np.ndarray) -> np.ndarray:
    """torchvision's Inception3._transform_input, channel by channel (NHWC)."""
    scale = np.array([s / 0.5 for s in IMAGENET_STD], x.dtype)
    shift = np.array([(m - 0.5) / 0.5 for m in IMAGENET_MEAN], x.dtype)
    return x * scale + shift


def avg_pool(x: np.ndarray, k: int, stride: int, rule: str, count_pad: bool) -> np.ndarray:
    """An average pool; where it pads (rule "tf_same") every window divides either by k*k
    (count_pad: torch's count_include_pad) or by the cells of the input it covers (TensorFlow's)."""
    (t, b), (l, r) = C.pad_amounts(rule, x.shape[1], k, stride), C.pad_amounts(rule, x.shape[2], k, stride)
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    total = win.sum(axis=(4, 5))
    if count_pad or t == b == l == r == 0:
        return total / (k * k)
    ones = np.pad(np.ones((1, *x.shape[1:3], 1), x.dtype), ((0, 0), (t, b), (l, r), (0, 0)))
    cw = np.lib.stride_tricks.sliding_window_view(ones, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return total / cw.sum(axis=(4, 5))


def segments(v: Inception, params: Mapping[str, np.ndarray], *, bn: BatchNorm | None = None,
             dtype=np.float64, convolve: Conv2d = conv2d) -> list[Segment]:
    p = {k: np.asarray(a, dtype) for k, a in params.items()}
    bn = bn or inference_bn(v, p)

    def conv(c: plan.Conv, h):
        h = convolve(np.asarray(h, dtype), p[f"{c.name}/kernel"], c.stride, c.padding, None)
        return relu(bn(f"{c.name}/bn", h))

    def layer(op, h):
        if isinstance(op, plan.Conv):
            return conv(op, h)
        if op.kind == "max":
            return max_pool(h, op.k, op.stride, op.padding, "-inf")
        return avg_pool(h, op.k, op.stride, op.padding, v.pool_count_pad)

    segs: list[Segment] = []
    prev = None
    for op in plan.stem(v):
        def stem_fn(h, op=op, first=prev is None):
            h = np.asarray(h, dtype)
            if first and v.transform_input:
                h = transform_input(h)
            return {op.name: layer(op, h)}
        segs.append((op.name, prev, stem_fn))
        prev = op.name

    for blk in plan.blocks(v):
        def block_fn(h, blk=blk):
            out, parts = {}, []
            for br in blk.branches:
                b = h
                for op in br.layers:
                    b = layer(op, b)
                if br.split:
                    ends = [conv(e, b) for e in br.split]
                    out.update({e.name: y for e, y in zip(br.split, ends)})
                    parts += ends
                else:
                    out[br.layers[-1].name] = b
                    parts.append(b)
            out[blk.name] = np.concatenate(parts, axis=3)
            return out
        segs.append((blk.name, prev, block_fn))
        prev = blk.name
        if v.aux_logits and blk.index == v.aux_from:
            def aux_fn(h):
                h = avg_pool(np.asarray(h, dtype), plan.AUX_POOL.k, plan.AUX_POOL.stride, "valid", False)
                for c in plan.aux_convs(v):
                    h = conv(c, h)
                return {"aux/logits": h.mean(axis=(1, 2)) @ p["aux/logits/kernel"] + p["aux/logits/bias"]}
            segs.append(("aux/logits", blk.name, aux_fn))

    segs.append(("pool", prev, lambda h: {"pool": np.asarray(h, dtype).mean(axis=(1, 2))}))
    segs.append(("logits", "pool", lambda h: {"logits": h @ p["logits/kernel"] + p["logits/bias"]}))
    return segs
