"""Hypothesis strategies for equiv: variant descriptions, input batches, weights.

In hypothesis' own style: options are keyword-only, each may be a value or a strategy, bad
values raise hypothesis' InvalidArgument naming the option (at once for values, when drawn
for strategies). Example::

    from hypothesis import given, strategies as st
    from equiv import strategies as es

    @given(v=es.variants(max_stages=2), data=st.data())
    def test_mine(v, data):
        x = data.draw(es.inputs(v, batch=1))
"""

from __future__ import annotations

import numpy as np
from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from equiv import canonical as C
from equiv import weights as W
from equiv.errors import EquivError
from equiv.frameworks import FRAMEWORKS
from equiv.variants import Variant, all_variants, get

__all__ = ["input_shapes", "inputs", "mutations", "registered_variants", "variants", "weights"]

DTYPES = ("float16", "float32", "float64")
BATCHES = st.integers(1, 3)  # default batch sizes
SEEDS = st.integers(0, 2**16)  # default seeds of values and weights


def _strategy(x) -> st.SearchStrategy:
    return x if isinstance(x, st.SearchStrategy) else st.just(x)


def _integer(name: str, value, min_value: int) -> None:
    """InvalidArgument unless `value` is an integer of at least `min_value` (strategies pass:
    their draws are checked when drawn)."""
    if isinstance(value, st.SearchStrategy):
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name}={value!r} must be an integer or a strategy of them")
    if value < min_value:
        raise InvalidArgument(f"{name}={value} must be at least {min_value}")


def _draw_integer(draw, name: str, value, min_value: int) -> int:
    x = draw(_strategy(value))
    _integer(name, x, min_value)
    return int(x)


def _variant_value(v) -> Variant:
    if isinstance(v, Variant):
        return v
    if isinstance(v, str):
        try:
            return get(v)
        except EquivError as e:
            raise InvalidArgument(f"variant={v!r}: {e}") from None
    raise InvalidArgument(f"variant={v!r} must be a Variant, a registered name or a strategy of them")


def _draw_variant(draw, variant) -> Variant:
    return _variant_value(draw(_strategy(variant)))


def _check_variant(variant) -> None:
    if not isinstance(variant, st.SearchStrategy):
        _variant_value(variant)


# ---------------------------------------------------------------------------------------
# Variant descriptions


# Every convention a description draws, with its allowed values, the registered references'
# first (hypothesis shrinks towards the first value, so a minimal failing example keeps them).
# `mutations` changes one of them.
CONVENTIONS: dict[str, tuple] = {
    "preact": (False, True),
    "stride_unit": ("first", "last"),
    "stride_conv": (1, 2, 3),  # at most the block's convs per unit
    "projection": ("first_unit", "channels", "channels_or_stride"),
    "shortcut_norm": (True, False),
    "conv_bias": ("none", "all", "unnormalized"),
    "conv_padding": ("symmetric", "tf_same"),
    "bn_epsilon": (1e-5, 1.001e-5, 1e-3),
    "bn_scale": (True, False),
    "stem_kernel": (7, 3, 5),
    "stem_stride": (2, 1),
    "stem_padding": ("symmetric", "tf_same"),
    "pool_kernel": (3, 2, 1),
    "pool_stride": (2, 1),
    "pool_padding": ("symmetric", "tf_same", "valid"),
    "pool_pad_value": ("-inf", "zero"),  # TF SAME pools pad with -inf only
    "bottleneck_expansion": (4, 1, 2, 3),
    "inner_norm": (True, False),
    "branch_relu": ("inner", "inner_strided", "every"),
    "preact_relu": (True, False),
    "identity_from": ("input", "preact"),
    "stem_norm": (None, True, False),
    "stem_relu": (None, True, False),
    "head_activation": ("none", "softmax"),
}
# The real stem: a 7x7 stride-2 conv, then a 3x3 stride-2 max pool (every registered reference).
REAL_STEM = {"stem_kernel": 7, "stem_stride": 2, "pool_kernel": 3, "pool_stride": 2}


@st.composite
def _variants(draw, max_stages, max_units, min_width, max_width, max_classes, block, preact, flatten,
              min_side) -> Variant:
    n = draw(st.integers(1, _draw_integer(draw, "max_stages", max_stages, 1)))
    units = _draw_integer(draw, "max_units", max_units, 1)
    lo, hi = _draw_integer(draw, "min_width", min_width, 1), _draw_integer(draw, "max_width", max_width, 1)
    if lo > hi:
        raise InvalidArgument(f"min_width={lo} is larger than max_width={hi}")
    block_ = draw(st.sampled_from(["basic", "bottleneck"]) if block is None else _strategy(block))
    if block_ not in ("basic", "bottleneck"):
        raise InvalidArgument(f"block={block_!r} must be 'basic' or 'bottleneck'")
    preact_ = draw(st.booleans() if preact is None else _strategy(preact))
    if not isinstance(preact_, bool):
        raise InvalidArgument(f"preact={preact_!r} must be True or False")
    flatten_ = draw(st.booleans() if flatten is None else _strategy(flatten))
    if not isinstance(flatten_, bool):
        raise InvalidArgument(f"flatten={flatten_!r} must be True or False")
    smallest = None if min_side is None else _draw_integer(draw, "min_side", min_side, 1)

    def pick(name, values=None):
        return draw(st.sampled_from(values or CONVENTIONS[name]))

    width = st.integers(lo, hi)
    # Half the draws take the real stem, so its pool (3x3, stride 2) is not left to a 1 in 6 chance.
    stem = REAL_STEM if not draw(st.booleans()) else {k: pick(k) for k in REAL_STEM}
    pool_padding = pick("pool_padding")
    v = Variant(
        name="hypothesis/random", native=draw(st.sampled_from(FRAMEWORKS)),
        description="drawn by equiv.strategies.variants",
        block=block_,
        depths=tuple(draw(st.lists(st.integers(1, units), min_size=n, max_size=n))),
        widths=tuple(draw(st.lists(width, min_size=n, max_size=n))),
        strides=tuple(draw(st.lists(st.sampled_from([2, 1]), min_size=n, max_size=n))),
        preact=preact_,
        stride_unit=pick("stride_unit"),
        stride_conv=pick("stride_conv", (1, 2, 3) if block_ == "bottleneck" else (1, 2)),
        projection=pick("projection"),
        shortcut_norm=pick("shortcut_norm"),
        conv_bias=pick("conv_bias"),
        conv_padding=pick("conv_padding"),
        bn_epsilon=pick("bn_epsilon"),
        bn_scale=pick("bn_scale"),
        stem_width=draw(width),
        stem_padding=pick("stem_padding"),
        pool_padding=pool_padding,
        pool_pad_value="-inf" if pool_padding == "tf_same" else pick("pool_pad_value"),
        num_classes=draw(st.integers(1, _draw_integer(draw, "max_classes", max_classes, 1))),
        # the seed's conventions
        bottleneck_expansion=pick("bottleneck_expansion"),
        inner_norm=pick("inner_norm"),
        branch_relu=pick("branch_relu"),
        preact_relu=pick("preact_relu"),
        identity_from=pick("identity_from"),
        stem_norm=pick("stem_norm"),
        stem_relu=pick("stem_relu"),
        head_activation=pick("head_activation"),
        **stem,
    )
    if flatten_:  # a pooled, flattened head, which fixes the input size
        side = max(C.min_body_size(v), smallest or 1)
        spread = 9 if smallest is None else 17
        size = (draw(st.integers(side, side + spread)), draw(st.integers(side, side + spread)))
        last = min(C.spatial_sizes(v, n)[-1] for n in size)
        k = draw(st.integers(1, last))
        v = v.replace(head_pool=k, head_pool_stride=draw(st.integers(1, k)), input_size=size)
    return v


def variants(*, max_stages=4, max_units=3, min_width=4, max_width=32, max_classes=16, block=None,
             preact=None, flatten=None, min_side=None) -> st.SearchStrategy[Variant]:
    """Small random variant descriptions, every convention field drawn (paddings, stride
    placement, shortcuts, biases, BatchNorm epsilon and scale, stem and pool, and the seed's:
    BatchNorm-free branches, ReLU rules, pooled and flattened or softmax heads), so that any
    convention one framework realises differently from another shows up. Half of them take
    the real stem (7x7 stride-2 conv, 3x3 stride-2 max pool); `CONVENTIONS` lists the values
    each convention is drawn from.

    * max_stages: 1 to this many stages.
    * max_units: 1 to this many units per stage.
    * min_width, max_width: the width of each stage and of the stem.
    * max_classes: 1 to this many classes in the head.
    * block: "basic" or "bottleneck"; drawn when None.
    * preact: True (v2, pre-activation) or False (v1); drawn when None.
    * flatten: True for a pooled, flattened head (which fixes the input size), False for a
      global mean; drawn when None.
    * min_side: a flattened head's fixed input size is at least this on each side (default:
      the description's smallest, plus up to 9; with min_side, plus up to 17).

    Example::

        >>> v = variants(max_stages=2, max_width=8, block="basic").example()
        >>> v.block, len(v.depths) <= 2, max(v.widths) <= 8
        ('basic', True, True)
    """
    for name, value in (("max_stages", max_stages), ("max_units", max_units), ("min_width", min_width),
                        ("max_width", max_width), ("max_classes", max_classes)):
        _integer(name, value, 1)
    if min_side is not None:
        _integer("min_side", min_side, 1)
    if isinstance(min_width, int) and isinstance(max_width, int) and min_width > max_width:
        raise InvalidArgument(f"min_width={min_width} is larger than max_width={max_width}")
    if block is not None and not isinstance(block, st.SearchStrategy) and block not in ("basic", "bottleneck"):
        raise InvalidArgument(f"block={block!r} must be 'basic' or 'bottleneck'")
    if preact is not None and not isinstance(preact, (bool, st.SearchStrategy)):
        raise InvalidArgument(f"preact={preact!r} must be True or False")
    if flatten is not None and not isinstance(flatten, (bool, st.SearchStrategy)):
        raise InvalidArgument(f"flatten={flatten!r} must be True or False")
    return _variants(max_stages, max_units, min_width, max_width, max_classes, block, preact, flatten, min_side)


def _check_native(native) -> None:
    if native is not None and not isinstance(native, st.SearchStrategy) and native not in FRAMEWORKS:
        raise InvalidArgument(f"native={native!r} must be one of {', '.join(FRAMEWORKS)}")


@st.composite
def _registered_variants(draw, native, max_units) -> Variant:
    native_ = draw(_strategy(native))
    _check_native(native_)
    units = None if max_units is None else _draw_integer(draw, "max_units", max_units, 1)
    pool = [v for v in all_variants()
            if (native_ is None or v.native == native_) and (units is None or sum(v.depths) <= units)]
    if not pool:
        raise InvalidArgument(f"no registered variant has native={native_!r} and max_units={units!r}")
    return draw(st.sampled_from(pool))


def registered_variants(*, native=None, max_units=None) -> st.SearchStrategy[Variant]:
    """The registry's real references (`equiv variants`).

    * native: only those native to this framework (a name of `equiv.frameworks.FRAMEWORKS`); any when None.
    * max_units: only those with at most this many residual units in all (resnet18 has 8,
      resnet50 16), to keep a test cheap; any when None.

    Example::

        >>> registered_variants(native="torch", max_units=8).example().name
        'torchvision/resnet18'
    """
    _check_native(native)
    if max_units is not None:
        _integer("max_units", max_units, 1)
    return _registered_variants(native, max_units)


# ---------------------------------------------------------------------------------------
# Inputs


@st.composite
def _input_shapes(draw, variant, batch, min_side, max_side) -> tuple[int, int, int, int]:
    v = _draw_variant(draw, variant)
    if v.input_size is not None:  # a flattened head takes one size only
        return _draw_integer(draw, "batch", batch, 1), *v.input_size, v.in_channels
    smallest = C.min_input_size(v)
    lo = smallest if min_side is None else _draw_integer(draw, "min_side", min_side, 1)
    if lo < smallest:
        raise InvalidArgument(f"min_side={lo} is below {v.name}'s smallest input side, {smallest}")
    hi = lo + 12 if max_side is None else _draw_integer(draw, "max_side", max_side, 1)
    if hi < lo:
        raise InvalidArgument(f"max_side={hi} is smaller than min_side={lo}")
    n = _draw_integer(draw, "batch", batch, 1)
    return n, draw(st.integers(lo, hi)), draw(st.integers(lo, hi)), v.in_channels


def input_shapes(variant, *, batch=BATCHES, min_side=None, max_side=None):
    """NHWC shapes that `variant` accepts, height and width drawn apart, odd sizes included
    (where TF's SAME padding and PyTorch's symmetric padding part ways).

    * variant: a Variant or registered name (or a strategy of them).
    * batch: the batch size.
    * min_side: the smallest height or width (default: the variant's smallest input side).
    * max_side: the largest (default: min_side + 12).

    A variant whose flattened head fixes the input size (`Variant.input_size`) gets that size.

    Example::

        >>> input_shapes("torchvision/resnet18", batch=1, min_side=31, max_side=31).example()
        (1, 31, 31, 3)
    """
    _check_variant(variant)
    _integer("batch", batch, 1)
    for name, value in (("min_side", min_side), ("max_side", max_side)):
        if value is not None:
            _integer(name, value, 1)
    if isinstance(min_side, int) and isinstance(max_side, int) and max_side < min_side:
        raise InvalidArgument(f"max_side={max_side} is smaller than min_side={min_side}")
    return _input_shapes(variant, batch, min_side, max_side)


@st.composite
def _inputs(draw, variant, shape, dtype, seed) -> np.ndarray:
    v = _draw_variant(draw, variant)
    n, h, w, _ = draw(shape)
    dt = draw(_strategy(dtype))
    if dt not in DTYPES:
        raise InvalidArgument(f"dtype={dt!r} must be one of {', '.join(DTYPES)}")
    return W.random_input(v, n, h, w, seed=_draw_integer(draw, "seed", seed, 0)).astype(dt)


def inputs(variant, *, batch=BATCHES, min_side=None, max_side=None, dtype="float32",
           seed=SEEDS) -> st.SearchStrategy[np.ndarray]:
    """NHWC input batches that `variant` accepts, of the shapes `input_shapes` draws, with
    values as equiv's own checks use (seeded, image-like scale).

    * variant, batch, min_side, max_side: as for `input_shapes`.
    * dtype: "float32" (what every framework here computes in), "float16" or "float64".
    * seed: seeds the values.

    Example::

        >>> inputs("torchvision/resnet18", batch=2, min_side=32, max_side=32).example().shape
        (2, 32, 32, 3)
    """
    if not isinstance(dtype, st.SearchStrategy) and dtype not in DTYPES:
        raise InvalidArgument(f"dtype={dtype!r} must be one of {', '.join(DTYPES)}")
    _integer("seed", seed, 0)
    return _inputs(variant, input_shapes(variant, batch=batch, min_side=min_side, max_side=max_side), dtype, seed)


# ---------------------------------------------------------------------------------------
# Weights


@st.composite
def _weights(draw, variant, seed) -> dict[str, np.ndarray]:
    return W.random_params(_draw_variant(draw, variant), _draw_integer(draw, "seed", seed, 0))


def weights(variant, *, seed=SEEDS) -> st.SearchStrategy[dict[str, np.ndarray]]:
    """Canonical weights of `variant` that behave like trained ones (He-scaled kernels,
    BatchNorm statistics calibrated so activations stay of order one; see equiv.weights).

    * variant: a Variant or registered name (or a strategy of them).
    * seed: the weights are a function of it.

    Example::

        >>> sorted(weights("torchvision/resnet18", seed=0).example())[:2]
        ['logits/bias', 'logits/kernel']
    """
    _check_variant(variant)
    _integer("seed", seed, 0)
    return _weights(variant, seed)


# ---------------------------------------------------------------------------------------
# Mutations: one convention changed


def _admits(v: Variant, size: tuple[int, int] | None) -> bool:
    """Whether `v` takes an input of `size` (every layer's output non-empty, a flattened head's
    pool inside the last map)."""
    if size is None:
        return True
    if min(size) < C.min_body_size(v):
        return False
    return not v.head_pool or min(C.spatial_sizes(v, n)[-1] for n in size) >= v.head_pool


def mutants(variant: Variant, size: tuple[int, int] | None = None) -> dict[str, list[Variant]]:
    """`variant` with one convention of `CONVENTIONS` changed, for each convention: every other
    allowed value that makes a valid description (taking an input of `size`, when given).
    Conventions with no such value are left out."""
    v = _variant_value(variant)
    out: dict[str, list[Variant]] = {}
    for name, values in CONVENTIONS.items():
        alternatives = []
        for value in values:
            if value == getattr(v, name):
                continue
            try:
                m = v.replace(**{name: value})
            except ValueError:  # not a description (a TF SAME pool padding with zeros, say)
                continue
            if _admits(m, size):
                alternatives.append(m)
        if alternatives:
            out[name] = alternatives
    return out


@st.composite
def _mutations(draw, variant, size, fields) -> tuple[str, Variant]:
    v = _draw_variant(draw, variant)
    choices = mutants(v, draw(_strategy(size)))
    if fields is not None:
        choices = {k: ms for k, ms in choices.items() if k in fields}
        if not choices:  # this description cannot change those: another one
            reject()
    if not choices:
        raise InvalidArgument(f"no convention of {v.name} can change at input size {size!r}"
                              + ("" if fields is None else f" among fields={fields!r}"))
    name = draw(st.sampled_from(sorted(choices)))
    return name, draw(st.sampled_from(choices[name]))


def mutations(variant, *, size=None, fields=None) -> st.SearchStrategy[tuple[str, Variant]]:
    """One convention of `variant` changed to another allowed value: (its name, the changed
    description). The convention is drawn among those that can change.

    * variant: a Variant or registered name (or a strategy of them).
    * size: (height, width) the changed description must still take; any when None.
    * fields: only these conventions (names of `CONVENTIONS`); all when None.

    Example::

        >>> name, m = mutations("torchvision/resnet18", size=(32, 32)).example()
        >>> name in CONVENTIONS and getattr(m, name) != getattr(get("torchvision/resnet18"), name)
        True
    """
    _check_variant(variant)
    if fields is not None:
        unknown = sorted(set(fields) - set(CONVENTIONS))
        if unknown or isinstance(fields, str):
            raise InvalidArgument(f"fields={fields!r} must be a collection of names of CONVENTIONS")
        fields = frozenset(fields)
    return _mutations(variant, size, fields)
