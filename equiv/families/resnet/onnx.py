"""The ResNet family in ONNX: any description written as an ONNX graph with onnx.helper.

The graph is made from the plan alone (equiv.families.resnet.plan), through no other framework.
It takes NHWC float32 `x` (batch free, height and width fixed: TF SAME pads depend on them),
computes in NCHW inside, and gives every canonical tap as a graph output under its canonical name,
NHWC (equiv.frameworks.onnx.Graph). Initializers carry the canonical parameter names: kernels in
ONNX's layout (conv OIHW, a grouped conv's (out, in / groups, k, k); the dense kernel as canonical,
(features, classes), for MatMul, a 1x1-conv head's too: the same numbers), the others as they are.
The constants that are not parameters (pads, axes, BatchNorm's gamma of ones where a description
has none) are Constant nodes, so the initializers are exactly the parameters.

Padding is written out: a conv pads through its own `pads` where the amounts are the same on both
sides, and through an explicit Pad node (zeros) where they are not (TF SAME with a stride); a
-inf max-pool pads through an explicit Pad node of -inf, a zero-padded one is a MaxPool and a
border of zeros (`_border`). BatchNormalization runs in inference mode with the description's
epsilon; a GroupNorm is written out (reshape to groups, mean, biased variance, epsilon, gamma,
beta), as are weight standardisation (from the stored raw kernel, per output channel) and
ResNet-D's average-pooled projection (2x2 windows of the unit's stride, padded after and the
padding not counted: the reference's `avg_down`). The pooled features are a global mean, or an
average pool flattened in NHWC order; a headless network ends at them or at its last stage.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from equiv import canonical as C
from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet as Description
from equiv.frameworks.onnx import build_own, canonical_names, kernel_to_canonical, kernel_to_onnx, own_dialects

# equiv's own graph: canonical names, kernels OIHW (what every family's onnx builder shares)
DIALECTS = own_dialects()
framework_names = canonical_names
to_onnx, to_canonical = kernel_to_onnx, kernel_to_canonical


def build(variant: Description, *, reference: bool | None = None):
    """The adapter's model for `variant` (equiv.frameworks.onnx.Model): no library ships an ONNX
    ResNet, so reference=True is refused with the reason and the graph is always equiv's."""
    return build_own(variant, DIALECTS, graph, reference)


def _border(out: list[int], size: list[int], k: int, s: int, tb: tuple[int, int], lr: tuple[int, int]) -> np.ndarray:
    """(1, 1, H, W) of a max-pool's output: 0 where its window reaches into the padding, -inf elsewhere.

    A Pad of zeros before a MaxPool would say the same, but ONNX Runtime 1.30's Pad_Fusion folds such a
    Pad into the MaxPool, whose padding is -inf (equiv's own sessions turn it off; a written `.onnx` file
    must be right under anyone's ONNX Runtime)."""
    def reaches(n_out: int, n: int, before: int) -> np.ndarray:
        start = np.arange(n_out) * s - before
        return (start < 0) | (start + k > n)
    rows, cols = reaches(out[0], size[0], tb[0]), reaches(out[1], size[1], lr[0])
    return np.where(rows[:, None] | cols[None, :], 0.0, -np.inf).astype(np.float32)[None, None]


def graph(v: Description, params: Mapping[str, np.ndarray], height: int, width: int,
          outputs: list[str] | None = None, *, initializer=None):
    """The onnx.ModelProto of `v` on height x width inputs, its initializers `params` (canonical
    names, the graph's layout: `to_onnx`), its outputs the taps `outputs` (all when None), NHWC.
    `initializer(name, array)` makes each initializer's TensorProto (default: the array's data in
    the graph; the onnx adapter passes references to memory it hands ONNX Runtime itself)."""
    from equiv.frameworks.onnx import INPUT, Graph

    g = Graph()
    size = [height, width]  # spatial size of the tensor being built

    def norm(prefix: str, x: str) -> str:
        c = params[f"{prefix}/beta"].shape[0]
        gamma = f"{prefix}/gamma" if v.bn_scale else g.const(f"{prefix}/ones", np.ones(c, np.float32))
        if v.norm == "batch":
            return g.op("BatchNormalization", [x, gamma, f"{prefix}/beta", f"{prefix}/moving_mean",
                                               f"{prefix}/moving_variance"], prefix, epsilon=float(v.bn_epsilon))
        # GroupNorm: (N, G, C/G*H*W), normalised over its last axis (biased variance), then gamma and beta
        grouped = g.op("Reshape", [x, g.const(f"{prefix}/groups", np.array([0, v.norm_groups, -1], np.int64))], prefix)
        centred = g.op("Sub", [grouped, g.op("ReduceMean", [grouped], prefix, axes=[2], keepdims=1)], prefix)
        var = g.op("ReduceMean", [g.op("Mul", [centred, centred], prefix)], prefix, axes=[2], keepdims=1)
        std = g.op("Sqrt", [g.op("Add", [var, g.const(f"{prefix}/eps", np.array(v.bn_epsilon, np.float32))],
                                 prefix)], prefix)
        y = g.op("Reshape", [g.op("Div", [centred, std], prefix), g.op("Shape", [x], prefix)], prefix)
        per_channel = g.const(f"{prefix}/channels", np.array([c, 1, 1], np.int64))
        y = g.op("Mul", [y, g.op("Reshape", [gamma, per_channel], prefix)], prefix)
        return g.op("Add", [y, g.op("Reshape", [f"{prefix}/beta", per_channel], prefix)], prefix)

    def kernel(c: plan.Conv) -> str:
        """The conv's kernel; weight-standardised at run time from the stored raw kernel (per output
        channel over its k*k*cin weights, biased variance, ws_epsilon)."""
        k = f"{c.name}/kernel"
        if not v.weight_std:
            return k
        hint = f"{c.name}/ws"
        centred = g.op("Sub", [k, g.op("ReduceMean", [k], hint, axes=[1, 2, 3], keepdims=1)], hint)
        var = g.op("ReduceMean", [g.op("Mul", [centred, centred], hint)], hint, axes=[1, 2, 3], keepdims=1)
        eps = g.const(f"{hint}/eps", np.array(v.ws_epsilon, np.float32))
        return g.op("Div", [centred, g.op("Sqrt", [g.op("Add", [var, eps], hint)], hint)], hint)

    def conv(c: plan.Conv, x: str, hw: list[int]) -> tuple[str, list[int]]:
        tb = C.pad_amounts(c.padding, hw[0], c.kernel, c.stride)
        lr = C.pad_amounts(c.padding, hw[1], c.kernel, c.stride)
        y = g.conv(x, c.name, kernel(c), f"{c.name}/bias" if c.bias else None, c.kernel, c.stride, tb, lr,
                   c.groups)
        if c.norm:
            y = norm(f"{c.name}/bn", y)
        if c.relu:
            y = g.op("Relu", [y], c.name)
        return y, [C.output_size(c.padding, n, c.kernel, c.stride) for n in hw]

    def avg_down(x: str, hw: list[int], stride: int, hint: str) -> tuple[str, list[int]]:
        """ResNet-D's 2x2 average pool of stride `stride`: ceil(n / stride) windows a side, padded
        after only, the padding not counted (equiv.families.resnet.reference.avg_down)."""
        out = [-(-n // stride) for n in hw]
        pads = [max((o - 1) * stride + 2 - n, 0) for o, n in zip(out, hw)]
        y = g.op("AveragePool", [x], f"{hint}/avg", kernel_shape=[2, 2], strides=[stride, stride],
                 pads=[0, 0, *pads], count_include_pad=0)
        return y, out

    h = g.op("Transpose", [INPUT], "input/nchw", perm=[0, 3, 1, 2])
    for c in plan.stem_convs(v):  # one conv, or a deep stem's
        h, size = conv(c, h, size)
        g.tap(c.name, h)
    k, s = v.pool_kernel, v.pool_stride
    tb, lr = (C.pad_amounts(v.pool_padding, n, k, s) for n in size)
    out = [C.output_size(v.pool_padding, n, k, s) for n in size]
    if v.pool_pad_value == "-inf":
        h = g.pad(h, "stem/pool", tb, lr, float("-inf"))
        h = g.op("MaxPool", [h], "stem/pool", kernel_shape=[k, k], strides=[s, s], pads=[0, 0, 0, 0])
    else:  # zeros: MaxPool's own (-inf) padding, then at least 0 in every window that reaches the border
        h = g.op("MaxPool", [h], "stem/pool", kernel_shape=[k, k], strides=[s, s], pads=[tb[0], lr[0], tb[1], lr[1]])
        h = g.op("Max", [h, g.const("stem/pool/border", _border(out, size, k, s, tb, lr))], "stem/pool")
    size = out
    g.tap("stem/pool", h)
    for unit in plan.units(v):
        branch = identity = h
        if v.preact:
            branch = norm(f"{unit.name}/preact", h)
            if v.preact_relu:
                branch = g.op("Relu", [branch], f"{unit.name}/preact")
            g.tap(f"{unit.name}/preact", branch)
            if v.identity_from == "preact":
                identity = branch
        if unit.shortcut:
            into, hw = branch if v.preact else h, size
            if unit.avg_down:
                into, hw = avg_down(into, hw, unit.stride, unit.shortcut.name)
            shortcut, _ = conv(unit.shortcut, into, hw)
        elif unit.stride > 1:
            big = np.iinfo(np.int64).max
            shortcut = g.op("Slice", [identity, g.const("starts", np.array([0, 0], np.int64)),
                                      g.const("ends", np.array([big, big], np.int64)),
                                      g.const("axes", np.array([2, 3], np.int64)),
                                      g.const("steps", np.array([unit.stride] * 2, np.int64))], f"{unit.name}/shortcut")
        else:
            shortcut = identity
        g.tap(f"{unit.name}/shortcut", shortcut)
        r, hw = branch, size
        for c in unit.convs:
            r, hw = conv(c, r, hw)
            g.tap(c.name, r)
        size = hw
        h = g.op("Add", [shortcut, r], unit.name)
        if not v.preact:
            h = g.op("Relu", [h], unit.name)
        g.tap(unit.name, h)
    if v.preact:
        h = g.op("Relu", [norm("post", h)], "post")
        g.tap("post", h)
    if plan.has_pool(v):
        if v.head_pool:
            p = g.op("AveragePool", [h], "pool", kernel_shape=[v.head_pool] * 2, strides=[v.head_pool_stride] * 2)
            pooled = g.flatten_nhwc(p, "pool", out="pool")  # the dense kernel's rows are NHWC
        else:
            pooled = g.op("ReduceMean", [h], "pool", out="pool", axes=[2, 3], keepdims=0)
        g.tap("pool", pooled)
        if plan.has_classifier(v):  # a dense or a 1x1-conv head: the same MatMul on the pooled features
            head = C.output_tap(v)
            logits = g.dense(pooled, "logits", out="logits" if head == "logits" else None)
            if head == "probs":
                logits = g.op("Softmax", [logits], "probs", out="probs", axis=-1)
            g.tap(head, logits)
    wanted = C.tap_names(v) if outputs is None else list(outputs)
    return g.model(v, params, plan.param_shapes(v), plan.tap_shapes(v, height, width), wanted, height, width,
                   initializer)
