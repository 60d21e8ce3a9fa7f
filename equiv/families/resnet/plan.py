"""The ResNet plan: its canonical parameter names and shapes, taps, sizes and FLOPs.

Everything here is derived from a `ResNet` description alone and needs no framework;
equiv.canonical asks it on behalf of generic code.

Parameters are numpy float32 arrays named from indices:

    stem/conv/kernel                 (k, k, in, out)   HWIO, as TF and Keras store it
    stem/conv/bias                   (out,)
    stem/conv/bn/gamma|beta|moving_mean|moving_variance
    stem/conv{k}/...                 a deep stem's convs (ResNet-C/D), k = 1..n, in place of stem/conv
    stage{s}/unit{u}/preact/...      BatchNorm of a pre-activation (v2) unit
    stage{s}/unit{u}/shortcut/kernel, /bias, /bn/...
    stage{s}/unit{u}/conv{k}/kernel, /bias, /bn/...
                                     (a grouped conv's kernel: (k, k, in / groups, out))
    post/...                         BatchNorm before pooling (v2)
    logits/kernel                    (features, classes) as a Keras Dense stores it (a 1x1-conv
                                     head too: each backend's dialect maps the layout)
    logits/bias                      (classes,)

A GroupNorm (norm="group") keeps the BatchNorm's names with gamma and beta only (bn_fields);
a headless network (head "features" or "none") has no logits parameters.

Taps (intermediate outputs), in network order, all NHWC except the last two:

    stem/conv (or a deep stem's stem/conv1 .. stem/conv{n}), stem/pool,
    stage{s}/unit{u}/preact, .../shortcut, .../conv1 .. conv{n}, stage{s}/unit{u},
    post, pool (N, features), logits (N, classes), or probs (N, classes) for a softmax head;
    a headless network ends at pool (head "features") or at its last stage (head "none")

A conv tap is taken after that conv's BatchNorm and ReLU where it has them; a unit tap after
the add (and the ReLU of a v1 unit).
"""

from __future__ import annotations

from dataclasses import dataclass

from equiv.canonical import output_size
from equiv.families.resnet.description import ResNet

BN_FIELDS_SCALED = ("gamma", "beta", "moving_mean", "moving_variance")
BN_FIELDS_UNSCALED = ("beta", "moving_mean", "moving_variance")


@dataclass(frozen=True)
class Conv:
    """One convolution of the plan and what follows it."""

    name: str  # canonical layer name, e.g. stage1/unit1/conv2
    kernel: int
    cin: int
    cout: int
    stride: int
    padding: str  # "symmetric" | "tf_same"
    bias: bool
    norm: bool  # BatchNorm follows
    relu: bool  # ReLU follows (after the norm)
    groups: int = 1  # grouped conv (ResNeXt): its kernel is (k, k, cin / groups, cout)


@dataclass(frozen=True)
class Unit:
    stage: int  # 1-based
    index: int  # 1-based within the stage
    cin: int
    cout: int
    stride: int
    projection: bool
    convs: tuple[Conv, ...]
    shortcut: Conv | None  # the projection, when there is one
    # ResNet-D: the projection's input is average-pooled (2x2, the unit's stride, see
    # ResNet.projection_pool) and its conv has stride 1
    avg_down: bool = False

    @property
    def name(self) -> str:
        return f"stage{self.stage}/unit{self.index}"


def _bias(v: ResNet, norm: bool) -> bool:
    return v.conv_bias == "all" or (v.conv_bias == "unnormalized" and not norm)


def stem(v: ResNet) -> Conv:
    """The stem's last conv (its only one, `stem/conv`, unless the stem is deep)."""
    return stem_convs(v)[-1]


def stem_convs(v: ResNet) -> list[Conv]:
    """The stem's convs in order: `stem/conv`, or a deep stem's `stem/conv1` .. `stem/conv{n}`
    (each before the last with BatchNorm and ReLU; the first carries the stem's stride)."""
    norm = not v.preact if v.stem_norm is None else v.stem_norm
    relu = not v.preact if v.stem_relu is None else v.stem_relu
    if not v.deep_stem:
        return [Conv("stem/conv", v.stem_kernel, v.in_channels, v.stem_width, v.stem_stride,
                     v.stem_padding, _bias(v, norm), norm, relu)]
    widths = (*v.deep_stem, v.stem_width)
    convs, cin = [], v.in_channels
    for k, cout in enumerate(widths, start=1):
        last = k == len(widths)
        n, r = (norm, relu) if last else (True, True)
        convs.append(Conv(f"stem/conv{k}", v.stem_kernel, cin, cout, v.stem_stride if k == 1 else 1,
                          v.stem_padding, _bias(v, n), n, r))
        cin = cout
    return convs


def _branch_relu(v: ResNet, kernel: int, stride: int, last: bool) -> bool:
    if v.branch_relu == "every":
        return True
    if v.branch_relu == "inner_strided" and kernel > 1 and stride == 1:
        return False
    return not last


def units(v: ResNet) -> list[Unit]:
    out: list[Unit] = []
    cin = v.stem_width
    for s, (depth, width, stage_stride) in enumerate(zip(v.depths, v.widths, v.strides), start=1):
        cout = width * v.expansion
        for u in range(1, depth + 1):
            strided_unit = u == (1 if v.stride_unit == "first" else depth)
            stride = stage_stride if strided_unit else 1
            projection = {
                "first_unit": u == 1,
                "channels": cin != cout,
                "channels_or_stride": cin != cout or stride != 1,
            }[v.projection]
            if v.block == "bottleneck":
                shapes = [(1, cin, width), (3, width, width), (1, width, cout)]
            else:
                shapes = [(3, cin, width), (3, width, cout)]
            convs = []
            for k, (ksize, a, b) in enumerate(shapes, start=1):
                last = k == len(shapes)
                norm = v.inner_norm and not (v.preact and last)
                conv_stride = stride if k == v.stride_conv else 1
                groups = v.groups if v.block == "bottleneck" and k == 2 else 1
                convs.append(Conv(
                    f"stage{s}/unit{u}/conv{k}", ksize, a, b, conv_stride, v.conv_padding,
                    _bias(v, norm), norm, relu=_branch_relu(v, ksize, conv_stride, last), groups=groups,
                ))
            shortcut = None
            avg_down = projection and stride > 1 and v.projection_pool == "avg"
            if projection:
                shortcut = Conv(f"stage{s}/unit{u}/shortcut", 1, cin, cout, 1 if avg_down else stride, "symmetric",
                                _bias(v, v.shortcut_norm), v.shortcut_norm, relu=v.branch_relu == "every")
            out.append(Unit(s, u, cin, cout, stride, projection, tuple(convs), shortcut, avg_down))
            cin = cout
    return out


def head_pool_size(v: ResNet) -> tuple[int, int]:
    """(height, width) of the map the head flattens: (1, 1) for a global mean."""
    if not v.head_pool:
        return 1, 1
    last = [spatial_sizes(v, n)[-1] for n in v.input_size]
    return tuple(output_size("valid", n, v.head_pool, v.head_pool_stride) for n in last)


def channels(v: ResNet) -> int:
    """Channels of the last stage's output."""
    return v.widths[-1] * v.expansion


def features(v: ResNet) -> int:
    """The length of the feature vector the dense head sees (the "pool" tap)."""
    h, w = head_pool_size(v)
    return h * w * channels(v)


def bn_fields(v: ResNet) -> tuple[str, ...]:
    if v.norm == "group":  # no moving statistics
        return GN_FIELDS_SCALED if v.bn_scale else GN_FIELDS_UNSCALED
    return BN_FIELDS_SCALED if v.bn_scale else BN_FIELDS_UNSCALED


# Issue 16 B: normalisation, weight standardisation and heads

GN_FIELDS_SCALED = ("gamma", "beta")
GN_FIELDS_UNSCALED = ("beta",)


def has_classifier(v: ResNet) -> bool:
    """Whether the network ends in a classifier (a dense or 1x1-conv head with logits)."""
    return v.head in ("dense", "conv")


def has_pool(v: ResNet) -> bool:
    """Whether the network pools its last map into a feature vector (the "pool" tap)."""
    return v.head != "none"


def body_output(v: ResNet) -> str:
    """The last tap before the head: the post-norm (v2) or the last unit."""
    return "post" if v.preact else units(v)[-1].name


def unit_count(v: ResNet) -> int:
    """Residual units in all (resnet18 has 8, resnet50 16)."""
    return sum(v.depths)


def param_shapes(v: ResNet) -> dict[str, tuple[int, ...]]:
    """Every canonical parameter of `v`, in network order, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for f in bn_fields(v):
            shapes[f"{prefix}/{f}"] = (c,)

    def conv(c: Conv) -> None:
        shapes[f"{c.name}/kernel"] = (c.kernel, c.kernel, c.cin // c.groups, c.cout)
        if c.bias:
            shapes[f"{c.name}/bias"] = (c.cout,)
        if c.norm:
            bn(f"{c.name}/bn", c.cout)

    for c in stem_convs(v):
        conv(c)
    for unit in units(v):
        if v.preact:
            bn(f"{unit.name}/preact", unit.cin)
        if unit.shortcut:
            conv(unit.shortcut)
        for c in unit.convs:
            conv(c)
    if v.preact:
        bn("post", channels(v))
    if has_classifier(v):
        shapes["logits/kernel"] = (features(v), v.num_classes)
        shapes["logits/bias"] = (v.num_classes,)
    return shapes


def tap_names(v: ResNet) -> list[str]:
    """Every canonical tap of `v`, in network order."""
    taps = [c.name for c in stem_convs(v)] + ["stem/pool"]
    for unit in units(v):
        if v.preact:
            taps.append(f"{unit.name}/preact")
        taps.append(f"{unit.name}/shortcut")
        taps += [c.name for c in unit.convs]
        taps.append(unit.name)
    if v.preact:
        taps.append("post")
    return taps + head_taps(v)


def head_taps(v: ResNet) -> list[str]:
    """The pooled features and the output (none for a backbone, head "none")."""
    if not has_pool(v):
        return []
    return ["pool"] + ([output_tap(v)] if has_classifier(v) else [])


def output_tap(v: ResNet) -> str:
    """The head's output: "logits", or "probs" where the head ends in a softmax (whose input
    the seed's Keras model never exposes, so it is no tap there); a headless network's last
    tap: "pool" (head "features") or its last stage's output (head "none")."""
    if not has_classifier(v):
        return "pool" if has_pool(v) else body_output(v)
    return "probs" if v.head_activation == "softmax" else "logits"


def tap_depths(v: ResNet) -> dict[str, int]:
    """How many convolutions (and the final dense layer) lie on the longest path to each tap.

    Float32 rounding error accumulates like a random walk along that path, so tolerances
    grow with its square root (see equiv.compare)."""
    depths = {c.name: k for k, c in enumerate(stem_convs(v), start=1)}
    d = depths["stem/pool"] = len(depths)
    for unit in units(v):
        if v.preact:
            depths[f"{unit.name}/preact"] = d
        depths[f"{unit.name}/shortcut"] = d + (1 if unit.shortcut else 0)
        for k, c in enumerate(unit.convs, start=1):
            depths[c.name] = d + k
        d += len(unit.convs)
        depths[unit.name] = d
    if v.preact:
        depths["post"] = d
    if has_pool(v):
        depths["pool"] = d
    if has_classifier(v):
        depths[output_tap(v)] = d + 1
    return depths


def spatial_sizes(v: ResNet, size: int) -> list[int]:
    """The spatial size after the stem conv, the pool, and each stage (one axis)."""
    sizes = [size]
    for c in stem_convs(v):
        sizes = [output_size(c.padding, sizes[-1], c.kernel, c.stride)]
    sizes.append(output_size(v.pool_padding, sizes[-1], v.pool_kernel, v.pool_stride))
    for s in v.strides:
        sizes.append(output_size(v.conv_padding, sizes[-1], 3, s))
    return sizes


def min_body_size(v: ResNet) -> int:
    """The smallest input side for which every layer up to the head has a non-empty output."""
    for n in range(1, 4096):
        if all(s >= 1 for s in spatial_sizes(v, n)):
            return n
    raise ValueError(f"{v.name}: no usable input size")


def tap_shapes(v: ResNet, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Every tap's shape for one image of height x width, in network order: (H, W, C), or (C,)
    for the pooled features and the head. The one place tap shapes are derived (memory
    estimates, FLOPs and tests ask here)."""
    shapes: dict[str, tuple[int, ...]] = {}
    h, w = height, width
    for c in stem_convs(v):
        h, w = output_size(c.padding, h, c.kernel, c.stride), output_size(c.padding, w, c.kernel, c.stride)
        shapes[c.name] = (h, w, c.cout)
    h = output_size(v.pool_padding, h, v.pool_kernel, v.pool_stride)
    w = output_size(v.pool_padding, w, v.pool_kernel, v.pool_stride)
    shapes["stem/pool"] = (h, w, v.stem_width)
    for unit in units(v):
        if v.preact:
            shapes[f"{unit.name}/preact"] = (h, w, unit.cin)
        for c in unit.convs:
            h, w = output_size(c.padding, h, c.kernel, c.stride), output_size(c.padding, w, c.kernel, c.stride)
            shapes[c.name] = (h, w, c.cout)
        shapes[f"{unit.name}/shortcut"] = shapes[unit.name] = (h, w, unit.cout)
    if v.preact:
        shapes["post"] = (h, w, channels(v))
    if has_pool(v):
        shapes["pool"] = (features(v),)
    if has_classifier(v):
        shapes[output_tap(v)] = (v.num_classes,)
    return {t: shapes[t] for t in tap_names(v)}


def flops(v: ResNet, height: int, width: int) -> int:
    """Multiply-adds x 2 of one forward pass on one image, from the description: each conv's
    output size (its tap's shape; a projection's is its unit's) times its kernel volume."""
    shapes = tap_shapes(v, height, width)

    def conv_flops(c: Conv, out: tuple[int, ...]) -> int:
        return 2 * out[0] * out[1] * c.kernel * c.kernel * (c.cin // c.groups) * c.cout

    total = sum(conv_flops(c, shapes[c.name]) for c in stem_convs(v))
    for unit in units(v):
        if unit.shortcut:
            total += conv_flops(unit.shortcut, shapes[unit.name])
        total += sum(conv_flops(c, shapes[c.name]) for c in unit.convs)
    return total + (2 * features(v) * v.num_classes if has_classifier(v) else 0)
