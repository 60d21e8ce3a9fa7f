"""The Inception v3 plan: its canonical parameter names and shapes, taps, sizes and FLOPs.

Layers (canonical names):

    stem/conv{j}, stem/pool{j}                the stem's convs and max-pools (j counts each kind)
    mixed{i}/branch{b}/conv{k}, .../pool{k}  branch b (0-based) of mixed block i (0-based, as
                                             Keras' mixed0..mixed10; slim's Mixed_5b..Mixed_7c)
    mixed{i}/branch{b}/split{j}              the parallel convs ending a branch (1x3, 3x1)
    aux/conv1, aux/conv2, aux/logits         the auxiliary classifier
    logits                                   the classifier, after the global average pool

Parameters (numpy float32, canonical layouts): every conv `<layer>/kernel` (kh, kw, in, out)
HWIO, no bias, and its BatchNorm `<layer>/bn/beta|moving_mean|moving_variance` (and
`<layer>/bn/gamma` first where bn_scale: slim's and Keras' have none, which the canonical form
says by leaving it out); `logits/kernel` (in, classes), `logits/bias`; with aux_logits
`aux/logits/kernel`, `aux/logits/bias`.

Taps, in network order (NHWC): every stem conv and pool; in each mixed block every branch's last
layer (its last conv, each split conv, or a pool-only branch's pool), then `mixed{i}` (the
concatenation); `aux/logits` (N, classes) after the block it reads; `pool` (N, C) and `logits`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from equiv import canonical as C
from equiv.families.inception.description import Inception

BN_FIELDS_SCALED = ("gamma", "beta", "moving_mean", "moving_variance")
BN_FIELDS_UNSCALED = ("beta", "moving_mean", "moving_variance")


@dataclass(frozen=True)
class Conv:
    name: str
    kh: int
    kw: int
    stride: int
    padding: str  # a padding rule of equiv.canonical: "tf_same" (the description's "same") | "valid"
    cin: int
    cout: int


@dataclass(frozen=True)
class Pool:
    name: str
    kind: str  # "avg" | "max"
    k: int
    stride: int
    padding: str  # "tf_same" | "valid"


def rule(padding: str) -> str:
    """The description's "same" / "valid" as a padding rule of equiv.canonical."""
    return "tf_same" if padding == "same" else padding


@dataclass(frozen=True)
class Branch:
    name: str  # mixed{i}/branch{b}
    index: int
    layers: tuple  # Conv | Pool in order
    split: tuple  # Conv: parallel ends, concatenated
    cout: int

    @property
    def taps(self) -> list[str]:
        return [c.name for c in self.split] if self.split else [self.layers[-1].name]


@dataclass(frozen=True)
class Block:
    name: str  # mixed{i}
    index: int
    cin: int
    branches: tuple
    cout: int


def _layers(prefix: str, ops, cin: int) -> tuple[list, int]:
    out, convs, pools = [], 0, 0
    for op in ops:
        if op[0] == "conv":
            convs += 1
            _, kh, kw, stride, padding, cout = op
            out.append(Conv(f"{prefix}/conv{convs}", kh, kw, stride, rule(padding), cin, cout))
            cin = cout
        else:
            pools += 1
            kind, k, stride, padding = op
            out.append(Pool(f"{prefix}/pool{pools}", kind, k, stride, rule(padding)))
    return out, cin


@functools.lru_cache(maxsize=64)
def structure(v: Inception) -> tuple[tuple, tuple, int]:
    """(stem layers, mixed blocks, channels out of the last block)."""
    stem, c = _layers("stem", v.stem, v.in_channels)
    blocks = []
    for i, spec in enumerate(v.blocks):
        branches, total = [], 0
        for b, (ops, split) in enumerate(spec):
            name = f"mixed{i}/branch{b}"
            layers, out = _layers(name, ops, c)
            ends = tuple(Conv(f"{name}/split{j}", op[1], op[2], op[3], rule(op[4]), out, op[5])
                         for j, op in enumerate(split, start=1))
            if ends:
                out = sum(e.cout for e in ends)
            branches.append(Branch(name, b, tuple(layers), ends, out))
            total += out
        blocks.append(Block(f"mixed{i}", i, c, tuple(branches), total))
        c = total
    return tuple(stem), tuple(blocks), c


def stem(v: Inception) -> tuple:
    return structure(v)[0]


def blocks(v: Inception) -> tuple:
    return structure(v)[1]


def features(v: Inception) -> int:
    return structure(v)[2]


def aux_convs(v: Inception) -> list[Conv]:
    """The auxiliary head's convs: 1x1 to aux_widths[0], then 5x5 VALID to aux_widths[1]."""
    cin = blocks(v)[v.aux_from].cout
    a, b = v.aux_widths
    return [Conv("aux/conv1", 1, 1, 1, "valid", cin, a), Conv("aux/conv2", 5, 5, 1, "valid", a, b)]


AUX_POOL = Pool("aux/pool", "avg", 5, 3, "valid")


def convs(v: Inception) -> list[Conv]:
    """Every conv (each with a BatchNorm), in network order."""
    out = [c for c in stem(v) if isinstance(c, Conv)]
    for blk in blocks(v):
        for br in blk.branches:
            out += [c for c in br.layers if isinstance(c, Conv)] + list(br.split)
        if v.aux_logits and blk.index == v.aux_from:
            out += aux_convs(v)
    return out


def bn_fields(v: Inception) -> tuple[str, ...]:
    return BN_FIELDS_SCALED if v.bn_scale else BN_FIELDS_UNSCALED


def unit_count(v: Inception) -> int:
    """Its mixed blocks (Inception v3 has 11)."""
    return len(v.blocks)


def param_shapes(v: Inception) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for c in convs(v):
        shapes[f"{c.name}/kernel"] = (c.kh, c.kw, c.cin, c.cout)
        for f in bn_fields(v):
            shapes[f"{c.name}/bn/{f}"] = (c.cout,)
        if c.name == "aux/conv2":
            shapes["aux/logits/kernel"] = (c.cout, v.num_classes)
            shapes["aux/logits/bias"] = (v.num_classes,)
    shapes["logits/kernel"] = (features(v), v.num_classes)
    shapes["logits/bias"] = (v.num_classes,)
    return shapes


def tap_names(v: Inception) -> list[str]:
    taps = [layer.name for layer in stem(v)]
    for blk in blocks(v):
        for br in blk.branches:
            taps += br.taps
        taps.append(blk.name)
        if v.aux_logits and blk.index == v.aux_from:
            taps.append("aux/logits")
    return taps + head_taps(v)


def head_taps(v: Inception) -> list[str]:
    return ["pool", "logits"]


def output_tap(v: Inception) -> str:
    return "logits"


def tap_depths(v: Inception) -> dict[str, int]:
    depths, d = {}, 0
    for layer in stem(v):
        d += isinstance(layer, Conv)
        depths[layer.name] = d
    for blk in blocks(v):
        deepest = d
        for br in blk.branches:
            e = d + sum(isinstance(x, Conv) for x in br.layers)
            for t in br.taps:
                depths[t] = e + (1 if br.split else 0)
            deepest = max(deepest, e + (1 if br.split else 0))
        d = depths[blk.name] = deepest
        if v.aux_logits and blk.index == v.aux_from:
            depths["aux/logits"] = d + 3
    depths["pool"] = d
    depths["logits"] = d + 1
    return depths


def _conv_out(c: Conv, h: int, w: int) -> tuple[int, int]:
    return (C.output_size(c.padding, h, c.kh, c.stride), C.output_size(c.padding, w, c.kw, c.stride))


def _layer_out(layer, h: int, w: int) -> tuple[int, int]:
    if isinstance(layer, Conv):
        return _conv_out(layer, h, w)
    return (C.output_size(layer.padding, h, layer.k, layer.stride),
            C.output_size(layer.padding, w, layer.k, layer.stride))


def tap_shapes(v: Inception, height: int, width: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    h, w, c = height, width, v.in_channels
    for layer in stem(v):
        h, w = _layer_out(layer, h, w)
        c = layer.cout if isinstance(layer, Conv) else c
        shapes[layer.name] = (h, w, c)
    for blk in blocks(v):
        sizes = set()
        for br in blk.branches:
            bh, bw, bc = h, w, blk.cin
            for layer in br.layers:
                bh, bw = _layer_out(layer, bh, bw)
                bc = layer.cout if isinstance(layer, Conv) else bc
            if br.split:
                for e in br.split:
                    eh, ew = _conv_out(e, bh, bw)
                    shapes[e.name] = (eh, ew, e.cout)
                    sizes.add((eh, ew))
            else:
                shapes[br.layers[-1].name] = (bh, bw, bc)
                sizes.add((bh, bw))
        (h, w), = sizes if len(sizes) == 1 else [(-1, -1)]
        shapes[blk.name] = (h, w, blk.cout)
        if v.aux_logits and blk.index == v.aux_from:
            shapes["aux/logits"] = (v.num_classes,)
    shapes["pool"] = (c if not blocks(v) else blocks(v)[-1].cout,)
    shapes["logits"] = (v.num_classes,)
    return {t: shapes[t] for t in tap_names(v)}


def _fits(v: Inception, n: int) -> bool:
    """Every layer has a non-empty output on an n x n input, and the branches of each block agree."""
    h = w = n
    for layer in stem(v):
        h, w = _layer_out(layer, h, w)
        if min(h, w) < 1:
            return False
    for blk in blocks(v):
        sizes = set()
        for br in blk.branches:
            bh, bw = h, w
            for layer in (*br.layers, *br.split[:1]):
                bh, bw = _layer_out(layer, bh, bw)
                if min(bh, bw) < 1:
                    return False
            sizes.add((bh, bw))
        if len(sizes) != 1:
            return False
        (h, w), = sizes
        if v.aux_logits and blk.index == v.aux_from:
            ah, aw = _layer_out(AUX_POOL, h, w)
            if min(ah, aw) < 5:  # the 5x5 VALID conv after it
                return False
    return True


@functools.lru_cache(maxsize=64)
def min_body_size(v: Inception) -> int:
    """The smallest side every layer takes (75 for Inception v3; 299 with its auxiliary head,
    whose 5x5 VALID conv needs Mixed_6e at 17x17)."""
    for n in range(1, 4097):
        if _fits(v, n):
            return n
    raise ValueError(f"{v.name}: no input side up to 4096 fits every layer (its branches disagree in size)")


def flops(v: Inception, height: int, width: int) -> int:
    shapes = tap_shapes(v, height, width)
    total, h, w = 0, height, width
    for layer in stem(v):
        h, w = _layer_out(layer, h, w)
        if isinstance(layer, Conv):
            total += 2 * h * w * layer.kh * layer.kw * layer.cin * layer.cout
    for blk in blocks(v):
        for br in blk.branches:
            bh, bw = h, w
            for layer in (*br.layers,):
                bh, bw = _layer_out(layer, bh, bw)
                if isinstance(layer, Conv):
                    total += 2 * bh * bw * layer.kh * layer.kw * layer.cin * layer.cout
            for e in br.split:
                eh, ew = _conv_out(e, bh, bw)
                total += 2 * eh * ew * e.kh * e.kw * e.cin * e.cout
        h, w, _ = shapes[blk.name]
    return total + 2 * features(v) * v.num_classes
