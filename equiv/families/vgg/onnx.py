"""The VGG family in ONNX: any description written as an ONNX graph with onnx.helper.

Made from the plan alone (equiv.families.vgg.plan), through no other framework; NHWC input and
taps, NCHW inside (equiv.frameworks.onnx.Graph). Initializers carry the canonical names: conv
kernels OIHW, dense kernels as canonical (in, out) for MatMul (fc6's rows in NHWC order: the map
is transposed to NHWC before it is flattened), BatchNorm's statistics as they are.

Each 3x3 conv pads 1 on every side through its own `pads`; vgg16_bn's biased conv is followed by
BatchNormalization (inference mode, the description's epsilon); each stage ends in a 2x2 stride-2
VALID MaxPool (no padding, so no pad value to get wrong). torchvision's AdaptiveAvgPool2d is
written for the map size the graph is made for: nothing where it is the identity (7x7 at 224x224),
else an AveragePool where the bins are even, else two MatMuls with PyTorch's bins
([floor(i n / out), ceil((i + 1) n / out)), each averaged over its own elements).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from equiv.families.vgg import plan
from equiv.families.vgg.description import VGG as Description
from equiv.families.vgg.reference import adaptive_bins
from equiv.frameworks.onnx import build_own, canonical_names, kernel_to_canonical, kernel_to_onnx, own_dialects

# equiv's own graph: canonical names, kernels OIHW (what every family's onnx builder shares)
DIALECTS = own_dialects()
framework_names = canonical_names
to_onnx, to_canonical = kernel_to_onnx, kernel_to_canonical


def build(variant: Description, *, reference: bool | None = None):
    """The adapter's model for `variant` (equiv.frameworks.onnx.Model): no library ships an ONNX
    VGG, so reference=True is refused with the reason and the graph is always equiv's."""
    return build_own(variant, DIALECTS, graph, reference)


def _bins_matrix(n: int, out: int) -> np.ndarray:
    """(out, n): row i averages PyTorch's adaptive bin i of an axis of n."""
    m = np.zeros((out, n), np.float32)
    for i, (a, b) in enumerate(adaptive_bins(n, out)):
        m[i, a:b] = 1.0 / (b - a)
    return m


def graph(v: Description, params: Mapping[str, np.ndarray], height: int, width: int,
          outputs: list[str] | None = None, *, initializer=None):
    """The onnx.ModelProto of `v` on height x width inputs (as equiv.families.resnet.onnx.graph)."""
    from equiv.frameworks.onnx import INPUT, Graph

    g = Graph()
    h = g.op("Transpose", [INPUT], "input/nchw", perm=[0, 3, 1, 2])
    size = [height, width]
    for c in plan.convs(v):
        h = g.conv(h, c.name, f"{c.name}/kernel", f"{c.name}/bias" if v.conv_bias else None, 3, 1, (1, 1), (1, 1))
        if v.batch_norm:
            p = f"{c.name}/bn"
            h = g.op("BatchNormalization", [h, f"{p}/gamma", f"{p}/beta", f"{p}/moving_mean", f"{p}/moving_variance"],
                     p, epsilon=float(v.bn_epsilon))
        h = g.op("Relu", [h], c.name)
        g.tap(c.name, h)
        if c.index == v.convs[c.stage - 1]:
            h = g.op("MaxPool", [h], f"stage{c.stage}/pool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])
            size = [n // 2 for n in size]
            g.tap(f"stage{c.stage}/pool", h)
    if v.adaptive_pool is not None and tuple(size) != tuple(v.adaptive_pool):
        (oh, ow), (n, m) = v.adaptive_pool, size
        if n % oh == 0 and m % ow == 0:  # even bins: one average pool
            h = g.op("AveragePool", [h], "avgpool", kernel_shape=[n // oh, m // ow], strides=[n // oh, m // ow])
        else:  # rows then columns, each a matrix of PyTorch's bins
            h = g.op("MatMul", [g.const("avgpool/rows", _bins_matrix(n, oh)), h], "avgpool")
            h = g.op("MatMul", [h, g.const("avgpool/cols", _bins_matrix(m, ow).T.copy())], "avgpool")
    x = g.flatten_nhwc(h, "flatten", out="flatten")
    g.tap("flatten", x)
    for name, _, _ in plan.dense_layers(v):
        x = g.dense(x, name, relu=name != "logits", out=name)
        g.tap(name, x)
    wanted = plan.tap_names(v) if outputs is None else list(outputs)
    return g.model(v, params, plan.param_shapes(v), plan.tap_shapes(v, height, width), wanted, height, width,
                   initializer)
