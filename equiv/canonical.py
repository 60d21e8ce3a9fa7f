"""The canonical form, for any network family: parameter names and layout, taps, and the plan.

A family's plan (equiv/families/<family>/plan.py) says what a description's parameters and
taps are; this module asks it, so that generic code (check, diff, port, golden, memory, bench,
strategies, testing) never needs to know which family it holds. It also keeps what is the same
in every family: padding arithmetic, strict parameter checking, and tensor layouts.

Parameters are numpy float32 arrays in canonical names (the family's plan lists them):
convolution kernels HWIO as TF and Keras store them, dense kernels (in, out) as a Keras Dense
stores them. A grouped convolution's kernel (ResNeXt) is HWIO with I = in_channels / groups, as
TF, Keras (Conv2D(groups=)) and torch (OIHW, I the same) store it: output channel o belongs to group
o // (out / groups) and sees that group's input channels; TF 2.21's own grouped conv2d runs on the
CPU, so every backend computes it natively (slim through tf.nn.conv2d, slim.conv2d having no groups).
Taps are named outputs in network order, NHWC, or (N, features) after a flatten.

Names every family keeps, because generic code reads them: `<layer>/kernel` and `<layer>/bias`;
a BatchNorm's `<layer>/bn/{gamma,beta,moving_mean,moving_variance}` (or a bare BatchNorm's
`<layer>/{...}`), whose statistics equiv.weights calibrates; and the classifier `logits/kernel`,
`logits/bias`, whose head size ports change (1001 <-> 1000 classes, --num-classes). A headless
network has no classifier: its last tap is `output_tap` (generic code never assumes "logits").
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Mapping

import numpy as np

from equiv import families
from equiv.errors import EquivError, ParamMismatchError
from equiv.variants import Variant


def plan(v: Variant):
    """The plan module of `v`'s family."""
    return families.of(v).plan


# ---------------------------------------------------------------------------------------
# What every generic caller asks of a description (answered by its family's plan)


def param_shapes(v: Variant) -> dict[str, tuple[int, ...]]:
    """Every canonical parameter of `v` and its shape, in network order (a fresh dict each call)."""
    try:
        return dict(_param_shapes(v))
    except TypeError:  # a description holding an unhashable field: computed afresh
        return plan(v).param_shapes(v)


@lru_cache(maxsize=64)
def _param_shapes(v: Variant) -> dict[str, tuple[int, ...]]:
    # a description is frozen: its shapes are computed once (a port asks for them a dozen times)
    return plan(v).param_shapes(v)


def unit_count(v: Variant) -> int:
    """How many repeated blocks the network has (a ResNet's residual units): a cheap size."""
    return plan(v).unit_count(v)


def param_count(v: Variant) -> int:
    return sum(math.prod(s) for s in param_shapes(v).values())


def tap_names(v: Variant) -> list[str]:
    """Every canonical tap of `v`, in network order."""
    return plan(v).tap_names(v)


def output_tap(v: Variant) -> str:
    """The network's last tap: "logits", "probs" where the head ends in a softmax, or a headless
    network's last (its family's plan says which)."""
    return plan(v).output_tap(v)


def head_taps(v: Variant) -> list[str]:
    """The taps of the head (after the body): no BatchNorm there, and a flattened head may take
    one input size only."""
    return plan(v).head_taps(v)


def tap_depths(v: Variant) -> dict[str, int]:
    """How many layers with weights lie on the longest path to each tap (tolerances grow with
    its square root: see equiv.compare)."""
    return plan(v).tap_depths(v)


def tap_shapes(v: Variant, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Every tap's shape for one image of height x width, in network order: (H, W, C), or (C,)
    after the head's flatten. The one place tap shapes are derived (memory estimates, FLOPs
    and tests ask here)."""
    return plan(v).tap_shapes(v, height, width)


def flops(v: Variant, height: int, width: int) -> int:
    """Multiply-adds x 2 of one forward pass on one image."""
    return plan(v).flops(v, height, width)


def min_input_size(v: Variant) -> int:
    """The smallest input side for which every layer has a non-empty output."""
    return min(v.input_size) if v.input_size is not None else plan(v).min_body_size(v)


def min_body_size(v: Variant) -> int:
    """The smallest input side for which every layer up to the head has a non-empty output."""
    return plan(v).min_body_size(v)


def check_input_size(v: Variant, height: int, width: int) -> None:
    """Refuse an input size that `v` cannot take: below its smallest, or other than its only one."""
    if v.input_size is not None and (height, width) != tuple(v.input_size):
        h, w = v.input_size
        raise EquivError(f"{v.name} takes only {h}x{w} inputs (its flattened head fixes the size), "
                         f"got {height}x{width}: pass `input_size=({h}, {w})`")
    smallest = min_input_size(v)
    if min(height, width) < smallest:
        raise EquivError(f"`input_size=({height}, {width})` is too small for {v.name}: "
                         f"each side needs at least {smallest}")


def resolve_taps(v: Variant, taps) -> list[str]:
    """`None` or "all" for every tap; "logits" (the output tap, where the network has no logits:
    a headless one's pooled features or last stage); or a list of names (checked)."""
    known = tap_names(v)
    if taps is None or taps == "all":
        return known
    if taps == "logits" and "logits" not in known:
        return [output_tap(v)]
    if isinstance(taps, str):
        taps = [taps]
    unknown = [t for t in taps if t not in known]
    if unknown:
        raise EquivError(f"unknown tap(s) for {v.name}: {', '.join(unknown)}")
    return list(taps)


# ---------------------------------------------------------------------------------------
# Padding: one rule, used by every plan and every adapter that must pad explicitly
#   "symmetric": (k-1)//2 before and the rest after, whatever the input size;
#   "tf_same":   TensorFlow's SAME: total = max((ceil(n/s)-1)*s + k - n, 0), before = total//2;
#   "valid":     none.


def pad_amounts(rule: str, size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one spatial axis of length `size`."""
    if rule == "valid":
        return 0, 0
    if rule == "symmetric":
        before = (kernel - 1) // 2
        return before, kernel - 1 - before
    if rule == "tf_same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    raise ValueError(f"unknown padding rule {rule!r}")


def output_size(rule: str, size: int, kernel: int, stride: int) -> int:
    before, after = pad_amounts(rule, size, kernel, stride)
    return (size + before + after - kernel) // stride + 1


# ---------------------------------------------------------------------------------------
# Strict checking, shared by every adapter's load


def check_params(v: Variant, params: Mapping[str, np.ndarray], source: str | None = None) -> None:
    """Raise ParamMismatchError unless `params` holds exactly the canonical parameters of `v`."""
    check_shapes(v, {n: tuple(np.shape(a)) for n, a in params.items()}, source)


def check_shapes(v: Variant, shapes: Mapping[str, tuple], source: str | None = None) -> None:
    """check_params on declared shapes (name -> shape), before any data is read."""
    expected = param_shapes(v)
    shapes = {n: tuple(s) for n, s in shapes.items()}
    missing = [n for n in expected if n not in shapes]
    unexpected = [n for n in shapes if n not in expected]
    mismatched = [(n, shape, shapes[n]) for n, shape in expected.items() if n in shapes and shapes[n] != shape]
    if missing or unexpected or mismatched:
        raise ParamMismatchError(v.name, missing, unexpected, mismatched, source, expected=expected,
                                 found={n: shapes[n] for n in unexpected})


# ---------------------------------------------------------------------------------------
# Layouts: the one place that knows how each framework lays out a tensor


def transposed(m: np.ndarray, tile: int = 64) -> np.ndarray:
    """A C-contiguous copy of the 2-D `m`'s transpose, copied tile by tile: a plain copy of `m.T`
    strides through memory a whole row apart at each element (a 2048x512 kernel: 19 ms; by 64x64
    tiles, which stay in cache: 3 ms)."""
    rows, cols = m.shape
    if rows * cols <= tile * tile:
        return np.ascontiguousarray(m.T)
    out = np.empty((cols, rows), m.dtype)
    for i in range(0, rows, tile):
        for j in range(0, cols, tile):
            out[j:j + tile, i:i + tile] = m[i:i + tile, j:j + tile].T
    return out


def hwio_to_oihw(k: np.ndarray, tile: int = 64) -> np.ndarray:
    h, w, i, o = k.shape
    out = np.empty((o, i, h, w), k.dtype)
    for a in range(0, o, tile):  # tile by tile, as `transposed`
        for b in range(0, i, tile):
            out[a:a + tile, b:b + tile] = k[:, :, b:b + tile, a:a + tile].transpose(3, 2, 0, 1)
    return out


def oihw_to_hwio(k: np.ndarray, tile: int = 64) -> np.ndarray:
    o, i, h, w = k.shape
    out = np.empty((h, w, i, o), k.dtype)
    for a in range(0, o, tile):
        for b in range(0, i, tile):
            out[:, :, b:b + tile, a:a + tile] = k[a:a + tile, b:b + tile].transpose(2, 3, 1, 0)
    return out


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def dense_rows_nhwc_to_nchw(k: np.ndarray, hwc: tuple[int, int, int]) -> np.ndarray:
    """A dense kernel (h*w*c, out) whose rows follow an NHWC flatten (the canonical form), with
    its rows reordered for an NCHW flatten of the same (h, w, c) map (torch.flatten of NCHW)."""
    h, w, c = hwc
    if k.ndim != 2 or k.shape[0] != h * w * c:
        return k  # not that kernel: left as it is, for the strict check to report
    return np.ascontiguousarray(k.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1))


def dense_rows_nchw_to_nhwc(k: np.ndarray, hwc: tuple[int, int, int]) -> np.ndarray:
    """The inverse of dense_rows_nhwc_to_nchw."""
    h, w, c = hwc
    if k.ndim != 2 or k.shape[0] != h * w * c:
        return k
    return np.ascontiguousarray(k.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1))
