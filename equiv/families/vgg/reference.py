"""The VGG family's numpy reference: any description, straight from its fields."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from equiv.families.vgg import plan
from equiv.families.vgg.description import VGG
from equiv.reference import BatchNorm, Conv2d, Segment, conv2d, max_pool, relu


def inference_bn(v: VGG, params: Mapping[str, np.ndarray]) -> BatchNorm:
    def bn(prefix: str, x: np.ndarray) -> np.ndarray:
        mean, var = params[f"{prefix}/moving_mean"], params[f"{prefix}/moving_variance"]
        return (x - mean) / np.sqrt(var + v.bn_epsilon) * params[f"{prefix}/gamma"] + params[f"{prefix}/beta"]
    return bn


def adaptive_bins(n: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's AdaptiveAvgPool bins of one axis: [floor(i n / out), ceil((i + 1) n / out))."""
    return [((i * n) // out, -(-((i + 1) * n) // out)) for i in range(out)]


def adaptive_avg_pool(h: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rows = adaptive_bins(h.shape[1], size[0])
    cols = adaptive_bins(h.shape[2], size[1])
    return np.stack([np.stack([h[:, a:b, c:d].mean(axis=(1, 2)) for c, d in cols], axis=1)
                     for a, b in rows], axis=1)


def segments(v: VGG, params: Mapping[str, np.ndarray], *, bn: BatchNorm | None = None,
             dtype=np.float64, convolve: Conv2d = conv2d) -> list[Segment]:
    p = {k: np.asarray(a, dtype) for k, a in params.items()}
    bn = bn or inference_bn(v, p)

    def conv_fn(c: plan.Conv):
        def fn(h):
            h = convolve(np.asarray(h, dtype), p[f"{c.name}/kernel"], 1, "symmetric", p.get(f"{c.name}/bias"))
            if v.batch_norm:
                h = bn(f"{c.name}/bn", h)
            return {c.name: relu(h)}
        return fn

    segs: list[Segment] = []
    prev = None
    for c in plan.convs(v):
        segs.append((c.name, prev, conv_fn(c)))
        prev = c.name
        if c.index == v.convs[c.stage - 1]:
            pool = f"stage{c.stage}/pool"
            segs.append((pool, prev, lambda h, pool=pool: {pool: max_pool(h, 2, 2, "valid", "-inf")}))
            prev = pool

    def flatten(h):
        if v.adaptive_pool is not None:
            h = adaptive_avg_pool(h, v.adaptive_pool)
        return {"flatten": h.reshape(h.shape[0], -1)}  # NHWC order: the canonical rows

    segs.append(("flatten", prev, flatten))
    prev = "flatten"
    for name, _, _ in plan.dense_layers(v):
        def dense(h, name=name):
            y = h @ p[f"{name}/kernel"] + p[f"{name}/bias"]
            return {name: y if name == "logits" else relu(y)}
        segs.append((name, prev, dense))
        prev = name
    return segs
