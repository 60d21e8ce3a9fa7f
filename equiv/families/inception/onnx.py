"""The Inception v3 family in ONNX: any description written as an ONNX graph with onnx.helper.

Made from the plan alone (equiv.families.inception.plan), through no other framework; NHWC input
and taps, NCHW inside (equiv.frameworks.onnx.Graph). Initializers carry the canonical names: conv
kernels OIHW, dense kernels as canonical (in, out) for MatMul, BatchNorm's statistics as they are;
a BatchNorm without a scale (slim's and Keras', bn_scale=False) multiplies by a constant 1.

Every conv has no bias and is followed by BatchNormalization (inference mode, the description's
epsilon) and a ReLU; each branch's outputs are concatenated on channels. Padding, as the other
builders of this backend: a SAME conv or pool whose amounts are equal on both sides pads through
its own `pads`; unequal amounts (TF SAME with a stride) are an explicit Pad node before it, of
zeros for a conv and of -inf for a max-pool. The branches' SAME average pool divides each window
by k*k (count_include_pad, torchvision: pool_count_pad) or by the cells it covers (TensorFlow's).
transform_input is torchvision's per-channel affine re-normalisation before the stem; the
auxiliary head (aux_logits) reads the block `aux_from`: 5x5 stride-3 VALID average pool, its two
convs, a global average pool and a dense layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from equiv import canonical as C
from equiv.families.inception import plan
from equiv.families.inception.description import Inception as Description
from equiv.families.inception.reference import IMAGENET_MEAN, IMAGENET_STD
from equiv.frameworks.onnx import build_own, canonical_names, kernel_to_canonical, kernel_to_onnx, own_dialects

# equiv's own graph: canonical names, kernels OIHW (what every family's onnx builder shares)
DIALECTS = own_dialects()
framework_names = canonical_names
to_onnx, to_canonical = kernel_to_onnx, kernel_to_canonical


def build(variant: Description, *, reference: bool | None = None):
    """The adapter's model for `variant` (equiv.frameworks.onnx.Model): no library ships an ONNX
    Inception v3, so reference=True is refused with the reason and the graph is always equiv's."""
    return build_own(variant, DIALECTS, graph, reference)


def graph(v: Description, params: Mapping[str, np.ndarray], height: int, width: int,
          outputs: list[str] | None = None, *, initializer=None):
    """The onnx.ModelProto of `v` on height x width inputs (as equiv.families.resnet.onnx.graph)."""
    from equiv.frameworks.onnx import INPUT, Graph

    g = Graph()

    def amounts(padding: str, kh: int, kw: int, stride: int, h: int, w: int):
        return C.pad_amounts(padding, h, kh, stride), C.pad_amounts(padding, w, kw, stride)

    def out_size(padding: str, kh: int, kw: int, stride: int, h: int, w: int) -> tuple[int, int]:
        if padding == "valid":
            return (h - kh) // stride + 1, (w - kw) // stride + 1
        return -(-h // stride), -(-w // stride)

    def conv(c: plan.Conv, x: str, hw: tuple[int, int]) -> tuple[str, tuple[int, int]]:
        tb, lr = amounts(c.padding, c.kh, c.kw, c.stride, *hw)
        pads = [0, 0, 0, 0]
        if tb[0] == tb[1] and lr[0] == lr[1]:
            pads = [tb[0], lr[0], tb[1], lr[1]]
        else:
            x = g.pad(x, c.name, tb, lr, 0.0)
        h = g.op("Conv", [x, f"{c.name}/kernel"], c.name, kernel_shape=[c.kh, c.kw], strides=[c.stride, c.stride],
                 pads=pads, dilations=[1, 1], group=1)
        p = f"{c.name}/bn"
        gamma = f"{p}/gamma" if v.bn_scale else g.const(f"{p}/gamma", np.ones(c.cout, np.float32))
        h = g.op("BatchNormalization", [h, gamma, f"{p}/beta", f"{p}/moving_mean", f"{p}/moving_variance"], p,
                 epsilon=float(v.bn_epsilon))
        return g.op("Relu", [h], c.name), out_size(c.padding, c.kh, c.kw, c.stride, *hw)

    def pool(op: plan.Pool, x: str, hw: tuple[int, int]) -> tuple[str, tuple[int, int]]:
        tb, lr = amounts(op.padding, op.k, op.k, op.stride, *hw)
        symmetric = tb[0] == tb[1] and lr[0] == lr[1]
        attrs = {"kernel_shape": [op.k, op.k], "strides": [op.stride, op.stride]}
        if op.kind == "max":
            if not symmetric:
                x, tb, lr = g.pad(x, op.name, tb, lr, float("-inf")), (0, 0), (0, 0)
            y = g.op("MaxPool", [x], op.name, pads=[tb[0], lr[0], tb[1], lr[1]], **attrs)
        else:
            if not symmetric:  # not in a description (a SAME average pool is stride 1, odd-sized)
                raise ValueError(f"{v.name}: {op.name}: an average pool with unequal padding")
            y = g.op("AveragePool", [x], op.name, pads=[tb[0], lr[0], tb[1], lr[1]],
                     count_include_pad=int(v.pool_count_pad), **attrs)
        return y, out_size(op.padding, op.k, op.k, op.stride, *hw)

    def layer(op, x, hw):
        return conv(op, x, hw) if isinstance(op, plan.Conv) else pool(op, x, hw)

    h = g.op("Transpose", [INPUT], "input/nchw", perm=[0, 3, 1, 2])
    if v.transform_input:
        scale = np.array([s / 0.5 for s in IMAGENET_STD], np.float32).reshape(1, 3, 1, 1)
        shift = np.array([(m - 0.5) / 0.5 for m in IMAGENET_MEAN], np.float32).reshape(1, 3, 1, 1)
        h = g.op("Add", [g.op("Mul", [h, g.const("transform/scale", scale)], "transform"),
                         g.const("transform/shift", shift)], "transform")
    hw = (height, width)  # of the map being written: what TF SAME pads depends on
    for op in plan.stem(v):
        h, hw = layer(op, h, hw)
        g.tap(op.name, h)
    for blk in plan.blocks(v):
        parts, ends_hw = [], hw
        for br in blk.branches:
            b, bhw = h, hw
            for op in br.layers:
                b, bhw = layer(op, b, bhw)
            if br.split:
                for e in br.split:
                    y, ends_hw = conv(e, b, bhw)
                    g.tap(e.name, y)
                    parts.append(y)
            else:
                g.tap(br.layers[-1].name, b)
                parts.append(b)
                ends_hw = bhw
        h, hw = g.op("Concat", parts, blk.name, axis=1), ends_hw
        g.tap(blk.name, h)
        if v.aux_logits and blk.index == v.aux_from:
            a, ahw = pool(plan.AUX_POOL, h, hw)
            for c in plan.aux_convs(v):
                a, ahw = conv(c, a, ahw)
            a = g.op("Flatten", [g.op("GlobalAveragePool", [a], "aux/gap")], "aux/flatten", axis=1)
            g.tap("aux/logits", g.dense(a, "aux/logits", out="aux/logits"))
    x = g.op("Flatten", [g.op("GlobalAveragePool", [h], "pool")], "pool", out="pool", axis=1)
    g.tap("pool", x)
    g.tap("logits", g.dense(x, "logits", out="logits"))
    wanted = plan.tap_names(v) if outputs is None else list(outputs)
    return g.model(v, params, plan.param_shapes(v), plan.tap_shapes(v, height, width), wanted, height, width,
                   initializer)
