"""The Inception v3 description: every convention that changes a number is a field.

An Inception v3 is a stem of convolutions and max-pools, then mixed blocks, each a few parallel
branches concatenated along channels, then a global average pool and the logits. Every conv has
no bias and is followed by a BatchNorm and a ReLU (the `BasicConv2d` of torchvision, `conv2d_bn`
of keras.applications, slim's conv2d with normalizer_fn=batch_norm); the logits (and the
auxiliary head's logits) carry a bias and no BatchNorm. Dropout is off in every build.

A mixed block is data: its branches, each a chain of ops, optionally ending in a `split`
(parallel convs on the chain's output, concatenated: the 1x3 / 3x1 ends of the 8x8 blocks).
An op is `("conv", kh, kw, stride, padding, out)` or `("avg" | "max", k, stride, padding)`;
padding is "same" (TF SAME; torchvision's symmetric k//2, equal for odd kernels at stride 1) or
"valid". Where the references differ in a number, it is a field:

* bn_scale: slim and Keras build their BatchNorms with scale=False (no gamma: the canonical form
  has no `bn/gamma` then, and torch's module keeps an affine BatchNorm's bias alone); torchvision's
  BatchNorm2d is affine (a gamma, 1 where ported from TensorFlow).
* bn_epsilon: 1e-3 in all three (torchvision's BasicConv2d sets eps=0.001).
* pool_count_pad: the branches' 3x3 stride-1 average pool pads by 1; TF's SAME average pool (slim,
  Keras) divides each border window by the cells it covers, torchvision's
  `F.avg_pool2d(..., padding=1)` (count_include_pad=True) by 9: border cells differ.
* transform_input: torchvision's option re-normalising an input from ImageNet mean/std to [-1, 1]
  scale before the stem (x * std / 0.5 + (mean - 0.5) / 0.5 per channel).
* aux_logits: the auxiliary classifier on the output of `aux_from` (Mixed_6e): 5x5 stride-3 VALID
  average pool, 1x1 conv, 5x5 VALID conv, a global average pool and a dense layer. slim builds it
  in inference too (end_points['AuxLogits']); torchvision has its parameters but runs it only in
  training (equiv taps it in eval all the same: it changes no other tap); Keras has none.
* num_classes: 1001 (slim, a background class first) or 1000.

slim's logits are a 1x1 conv after an 8x8 VALID average pool, squeezed: at the input size the
slim description fixes (299x299, input_size), the same numbers as a dense layer after a global
pool; the 1x1 conv is the slim builder's layout (`slim_shape`), not a field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from equiv.variants import Variant

Op = tuple  # ("conv", kh, kw, stride, padding, out) | ("avg"|"max", k, stride, padding)
Branch = tuple  # (ops, split): ops a tuple of Op, split a tuple of conv Ops (or ())
Block = tuple  # a tuple of Branch


@dataclass(frozen=True, kw_only=True)
class Inception(Variant):
    family: ClassVar[str] = "inception"

    # The stem: ops in order (convs and max-pools), as data like a branch's.
    stem: tuple
    blocks: tuple  # the mixed blocks, each a tuple of branches (ops, split)
    bn_scale: bool = False
    bn_epsilon: float = 1e-3
    pool_count_pad: bool = False
    transform_input: bool = False
    aux_logits: bool = False
    aux_from: int = 7  # the index of the mixed block the auxiliary head reads (Mixed_6e: 7)
    aux_widths: tuple[int, int] = (128, 768)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.blocks:
            raise ValueError(f"{self.name}: an Inception needs at least one mixed block")
        for where, ops in [("stem", self.stem)] + [(f"mixed{i}", b) for i, blk in enumerate(self.blocks)
                                                    for b, _ in blk]:
            for op in ops:
                _check_op(self.name, where, op)
        for i, blk in enumerate(self.blocks):
            if not blk:
                raise ValueError(f"{self.name}: mixed{i} has no branch")
            for ops, split in blk:
                if not ops and not split:
                    raise ValueError(f"{self.name}: mixed{i} has an empty branch")
                for op in split:
                    if op[0] != "conv":
                        raise ValueError(f"{self.name}: mixed{i}: a split holds convs only, got {op!r}")
                    _check_op(self.name, f"mixed{i}", op)
        for ops, _ in [(self.stem, ())] + [b for blk in self.blocks for b in blk]:
            for op in ops:
                if op[0] == "avg" and op[3] == "same" and (op[2] != 1 or op[1] % 2 == 0):
                    raise ValueError(f"{self.name}: a SAME average pool is stride 1 with an odd kernel, got {op!r}")
        if self.aux_logits and not 0 <= self.aux_from < len(self.blocks):
            raise ValueError(f"{self.name}: aux_from={self.aux_from} names no mixed block "
                             f"(there are {len(self.blocks)})")
        if not self.bn_epsilon > 0:
            raise ValueError(f"{self.name}: bn_epsilon must be positive")
        if self.transform_input and self.in_channels != 3:
            raise ValueError(f"{self.name}: transform_input re-normalises 3 RGB channels, "
                             f"not {self.in_channels}")


def _check_op(name: str, where: str, op) -> None:
    if not isinstance(op, tuple) or not op:
        raise ValueError(f"{name}: {where}: an op is a tuple, got {op!r}")
    kind = op[0]
    if kind == "conv":
        if len(op) != 6 or op[4] not in ("same", "valid") or min(op[1], op[2], op[3], op[5]) < 1:
            raise ValueError(f"{name}: {where}: a conv is ('conv', kh, kw, stride, 'same'|'valid', out), got {op!r}")
        if op[1] != op[2] and (op[3] != 1 or op[4] != "same" or op[1] % 2 == 0 or op[2] % 2 == 0):
            raise ValueError(f"{name}: {where}: a non-square conv is stride 1, SAME, odd-sized, got {op!r}")
    elif kind in ("avg", "max"):
        if len(op) != 4 or op[3] not in ("same", "valid") or min(op[1], op[2]) < 1:
            raise ValueError(f"{name}: {where}: a pool is ('{kind}', k, stride, 'same'|'valid'), got {op!r}")
    else:
        raise ValueError(f"{name}: {where}: unknown op {op!r}")
