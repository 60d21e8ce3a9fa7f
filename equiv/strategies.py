"""Hypothesis strategies for equiv: variant descriptions, input batches, weights.

Options are keyword-only; each may be a value or a strategy. Example::

    from hypothesis import given
    from equiv import strategies as es

    @given(es.variants(max_stages=2), es.data())
    def test_mine(variant, data):
        x = data.draw(es.inputs(variant))
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from equiv import canonical as C
from equiv import weights as W
from equiv.variants import Variant

__all__ = ["variants", "inputs", "params", "data"]

data = st.data


def _strategy(x) -> st.SearchStrategy:
    return x if isinstance(x, st.SearchStrategy) else st.just(x)


@st.composite
def _variant(draw, max_stages, max_units, min_width, max_width, max_classes) -> Variant:
    n = draw(st.integers(1, draw(max_stages)))
    block = draw(st.sampled_from(["basic", "bottleneck"]))
    width = st.integers(draw(min_width), draw(max_width))
    convs = 3 if block == "bottleneck" else 2
    pool_padding = draw(st.sampled_from(["valid", "symmetric", "tf_same"]))
    return Variant(
        name="hypothesis/random", native=draw(st.sampled_from(["slim", "keras", "torch"])),
        description="drawn by equiv.strategies.variants",
        block=block,
        depths=tuple(draw(st.lists(st.integers(1, draw(max_units)), min_size=n, max_size=n))),
        widths=tuple(draw(st.lists(width, min_size=n, max_size=n))),
        strides=tuple(draw(st.lists(st.sampled_from([1, 2]), min_size=n, max_size=n))),
        preact=draw(st.booleans()),
        stride_unit=draw(st.sampled_from(["first", "last"])),
        stride_conv=draw(st.integers(1, convs)),
        projection=draw(st.sampled_from(["first_unit", "channels", "channels_or_stride"])),
        shortcut_norm=draw(st.booleans()),
        conv_bias=draw(st.sampled_from(["all", "none", "unnormalized"])),
        conv_padding=draw(st.sampled_from(["symmetric", "tf_same"])),
        bn_epsilon=draw(st.sampled_from([1e-5, 1.001e-5, 1e-3])),
        bn_scale=draw(st.booleans()),
        stem_width=draw(width),
        stem_kernel=draw(st.sampled_from([3, 5, 7])),
        stem_stride=draw(st.sampled_from([1, 2])),
        stem_padding=draw(st.sampled_from(["symmetric", "tf_same"])),
        pool_kernel=draw(st.sampled_from([1, 2, 3])),
        pool_stride=draw(st.sampled_from([1, 2])),
        pool_padding=pool_padding,
        pool_pad_value="-inf" if pool_padding == "tf_same" else draw(st.sampled_from(["-inf", "zero"])),
        num_classes=draw(st.integers(1, draw(max_classes))),
    )


def variants(*, max_stages=4, max_units=3, min_width=4, max_width=32, max_classes=16) -> st.SearchStrategy[Variant]:
    """Small random variant descriptions, every convention field drawn.

    * max_stages: 1 to 4 stages by default.
    * max_units: units per stage, 1 to this.
    * min_width, max_width: bottleneck (or basic) width per stage and the stem's width.
    * max_classes: classes of the head, 1 to this.

    Example: ``variants(max_stages=2, max_width=8)``.
    """
    for name, value in (("max_stages", max_stages), ("max_units", max_units), ("min_width", min_width),
                        ("max_width", max_width), ("max_classes", max_classes)):
        if isinstance(value, int) and value < 1:
            raise InvalidArgument(f"{name}={value} must be at least 1")
    if isinstance(min_width, int) and isinstance(max_width, int) and min_width > max_width:
        raise InvalidArgument(f"min_width={min_width} is larger than max_width={max_width}")
    return _variant(*(_strategy(a) for a in (max_stages, max_units, min_width, max_width, max_classes)))


@st.composite
def _inputs(draw, variant, batch, extra, dtype, seed) -> np.ndarray:
    v = draw(_strategy(variant))
    lo = C.min_input_size(v)
    extra_ = draw(_strategy(extra))
    h = draw(st.integers(lo, lo + extra_))
    w = draw(st.integers(lo, lo + extra_))
    x = W.random_input(v, draw(_strategy(batch)), h, w, seed=draw(_strategy(seed)))
    return x.astype(draw(_strategy(dtype)))


def inputs(variant, *, batch=st.integers(1, 3), extra=12, dtype="float32",
           seed=st.integers(0, 2**16)) -> st.SearchStrategy[np.ndarray]:
    """NHWC input batches that `variant` accepts: any size from its smallest up, odd included.

    * variant: a Variant (or a strategy of them).
    * batch: batch size.
    * extra: how far above the variant's smallest side the height and width may go.
    * dtype: numpy dtype name.

    Example: ``inputs(equiv.get("torchvision/resnet18"), batch=1)``.
    """
    if isinstance(extra, int) and extra < 0:
        raise InvalidArgument(f"extra={extra} must be non-negative")
    return _inputs(variant, batch, extra, dtype, seed)


def params(variant, *, seed=st.integers(0, 2**16)) -> st.SearchStrategy[dict]:
    """Calibrated canonical weights for `variant` (see equiv.weights), drawn by seed.

    Example: ``params(equiv.get("slim/resnet_v2_50"), seed=0)``.
    """
    return st.tuples(_strategy(variant), _strategy(seed)).map(lambda vs: W.random_params(*vs))
