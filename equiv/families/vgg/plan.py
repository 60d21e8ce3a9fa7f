"""The VGG plan: its canonical parameter names and shapes, taps, sizes and FLOPs.

Parameters (numpy float32, canonical layouts):

    stage{s}/conv{k}/kernel          (3, 3, in, out)   HWIO
    stage{s}/conv{k}/bias            (out,)
    stage{s}/conv{k}/bn/gamma|beta|moving_mean|moving_variance   (batch_norm)
    fc{6+i}/kernel                   (in, out): fc6's rows are the flattened map in NHWC order
    fc{6+i}/bias
    logits/kernel, logits/bias

Taps, in network order: stage{s}/conv{k} (after its BatchNorm and ReLU), stage{s}/pool (NHWC);
flatten (N, h*w*c: the last pool, or the adaptive pool's output, flattened in NHWC order),
fc6, fc7, ... (after their ReLU), logits.
"""

from __future__ import annotations

from dataclasses import dataclass

from equiv.families.vgg.description import VGG

BN_FIELDS = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass(frozen=True)
class Conv:
    name: str  # stage{s}/conv{k}
    stage: int  # 1-based
    index: int  # 1-based within the stage
    cin: int
    cout: int


def convs(v: VGG) -> list[Conv]:
    out, cin = [], v.in_channels
    for s, (n, width) in enumerate(zip(v.convs, v.widths), start=1):
        for k in range(1, n + 1):
            out.append(Conv(f"stage{s}/conv{k}", s, k, cin, width))
            cin = width
    return out


def fc_names(v: VGG) -> list[str]:
    """The hidden dense layers: fc6, fc7, ... (VGG's own numbering, after its conv layers)."""
    return [f"fc{6 + i}" for i in range(len(v.fc_widths))]


def dense_layers(v: VGG) -> list[tuple[str, int, int]]:
    """(name, in, out) of every dense layer, the logits last."""
    sizes = [features(v), *v.fc_widths, v.num_classes]
    return [(name, a, b) for name, a, b in zip([*fc_names(v), "logits"], sizes, sizes[1:])]


def pooled(n: int, stages: int) -> int:
    """One spatial side after `stages` 2x2 stride-2 VALID max-pools."""
    for _ in range(stages):
        n //= 2
    return n


def flatten_map(v: VGG, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
    """(h, w, c) of the map the classifier flattens: the adaptive pool's size, or the last pool's
    at the description's input size."""
    c = v.widths[-1]
    if v.adaptive_pool is not None:
        return (*v.adaptive_pool, c)
    h, w = v.input_size if height is None else (height, width)
    return pooled(h, len(v.convs)), pooled(w, len(v.convs)), c


def features(v: VGG) -> int:
    h, w, c = flatten_map(v)
    return h * w * c


def unit_count(v: VGG) -> int:
    """Its convolutions (vgg16 has 13)."""
    return sum(v.convs)


def param_shapes(v: VGG) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for c in convs(v):
        shapes[f"{c.name}/kernel"] = (3, 3, c.cin, c.cout)
        if v.conv_bias:
            shapes[f"{c.name}/bias"] = (c.cout,)
        if v.batch_norm:
            for f in BN_FIELDS:
                shapes[f"{c.name}/bn/{f}"] = (c.cout,)
    for name, a, b in dense_layers(v):
        shapes[f"{name}/kernel"] = (a, b)
        shapes[f"{name}/bias"] = (b,)
    return shapes


def tap_names(v: VGG) -> list[str]:
    taps = []
    for s, n in enumerate(v.convs, start=1):
        taps += [f"stage{s}/conv{k}" for k in range(1, n + 1)] + [f"stage{s}/pool"]
    return taps + head_taps(v)


def head_taps(v: VGG) -> list[str]:
    """The flatten and the dense layers (no BatchNorm there)."""
    return ["flatten", *fc_names(v), "logits"]


def output_tap(v: VGG) -> str:
    return "logits"


def tap_depths(v: VGG) -> dict[str, int]:
    depths, d = {}, 0
    for s, n in enumerate(v.convs, start=1):
        for k in range(1, n + 1):
            d += 1
            depths[f"stage{s}/conv{k}"] = d
        depths[f"stage{s}/pool"] = d
    depths["flatten"] = d
    for name, _, _ in dense_layers(v):
        d += 1
        depths[name] = d
    return depths


def min_body_size(v: VGG) -> int:
    """Every pool halves (floor): the last one needs 2**stages on each side."""
    return 2 ** len(v.convs)


def tap_shapes(v: VGG, height: int, width: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    h, w = height, width
    for s, (n, width_) in enumerate(zip(v.convs, v.widths), start=1):
        for k in range(1, n + 1):
            shapes[f"stage{s}/conv{k}"] = (h, w, width_)
        h, w = h // 2, w // 2
        shapes[f"stage{s}/pool"] = (h, w, width_)
    fh, fw, fc = flatten_map(v, height, width)
    shapes["flatten"] = (fh * fw * fc,)
    for name, _, b in dense_layers(v):
        shapes[name] = (b,)
    return shapes


def flops(v: VGG, height: int, width: int) -> int:
    shapes = tap_shapes(v, height, width)
    total = sum(2 * shapes[c.name][0] * shapes[c.name][1] * 9 * c.cin * c.cout for c in convs(v))
    return total + sum(2 * a * b for _, a, b in dense_layers(v))
