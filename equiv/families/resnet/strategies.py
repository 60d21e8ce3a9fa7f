"""Hypothesis strategies for ResNet descriptions: `variants` draws every convention field, and
`mutations` changes one. equiv.strategies offers them (its `variants(family=...)` and
`mutations`), next to the strategies every family shares (inputs, weights)."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from equiv import canonical as C
from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet
from equiv.frameworks import FRAMEWORKS
from equiv.strategies import _draw_integer, _integer, _strategy, family_mutants, family_mutations

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
    # Issue 16 A: ResNet-D and grouped convolutions
    "deep_stem": ((), (4, 6), (8,)),  # inner widths of a deep stem (timm resnet50d: (32, 32))
    "projection_pool": ("stride", "avg"),
    "groups": (1, 2, 4),  # a bottleneck's 3x3 conv; the stage widths are drawn as multiples of it
    # Issue 16 B: normalisation, weight standardisation and heads
    "norm": ("batch", "group"),
    "norm_groups": (32, 1, 2, 4),  # drawn among those that divide every norm's channels
    "weight_std": (False, True),
    "ws_epsilon": (1e-8, 1e-6, 1e-5),
    "head": ("dense", "conv", "features", "none"),
}
# The real stem: a 7x7 stride-2 conv, then a 3x3 stride-2 max pool (every registered reference).
REAL_STEM = {"stem_kernel": 7, "stem_stride": 2, "pool_kernel": 3, "pool_stride": 2}


@st.composite
def _variants(draw, max_stages, max_units, min_width, max_width, max_classes, block, preact, flatten,
              min_side) -> ResNet:
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

    # Issue 16 A: groups divide every stage width, so those are drawn as multiples of it (where the
    # range holds one; else groups stay 1)
    groups = pick("groups") if block_ == "bottleneck" else 1
    if groups > 1 and hi // groups * groups < lo:
        groups = 1
    stage_width = st.integers(-(-lo // groups), hi // groups).map(lambda k: k * groups)
    width = st.integers(lo, hi)
    # Half the draws take the real stem, so its pool (3x3, stride 2) is not left to a 1 in 6 chance.
    stem = REAL_STEM if not draw(st.booleans()) else {k: pick(k) for k in REAL_STEM}
    pool_padding = pick("pool_padding")
    v = ResNet(
        name="hypothesis/random", native=draw(st.sampled_from(FRAMEWORKS)),
        description="drawn by equiv.strategies.variants",
        block=block_,
        depths=tuple(draw(st.lists(st.integers(1, units), min_size=n, max_size=n))),
        widths=tuple(draw(st.lists(stage_width, min_size=n, max_size=n))),
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
        # Issue 16 A
        deep_stem=pick("deep_stem"),
        projection_pool=pick("projection_pool"),
        groups=groups,
        **stem,
    )
    v = _draw_issue16b(draw, v, pick, flatten_)
    if flatten_:  # a pooled, flattened head, which fixes the input size
        side = max(C.min_body_size(v), smallest or 1)
        spread = 9 if smallest is None else 17
        size = (draw(st.integers(side, side + spread)), draw(st.integers(side, side + spread)))
        last = min(plan.spatial_sizes(v, n)[-1] for n in size)
        k = draw(st.integers(1, last))
        v = v.replace(head_pool=k, head_pool_stride=draw(st.integers(1, k)), input_size=size)
    return v


def _draw_issue16b(draw, v: ResNet, pick, flatten: bool) -> ResNet:
    """Norm, weight standardisation and head conventions (issue 16 B): the group count among those
    that divide every norm's channels (1 always does); a headless network where the head allows."""
    norm = pick("norm")
    groups = [g for g in CONVENTIONS["norm_groups"] if all(c % g == 0 for c in v.norm_channels())]
    head = pick("head")
    if flatten or (v.head_activation != "none" and head in ("features", "none")):
        head = "dense"  # a flattened head is a dense layer; a softmax needs logits
    # Weight standardisation with GroupNorm, as BiT: with BatchNorm, a standardised kernel's outputs
    # (of the order of sqrt(fan in)) leave the exact calibration's bounds (equiv.weights); the
    # mutation property still builds that pairing (its weights are calibrated before the change).
    ws = pick("weight_std") if norm == "group" and v.groups == 1 else False  # no grouped standardised conv
    return v.replace(norm=norm, norm_groups=draw(st.sampled_from(groups)) if norm == "group" else 32,
                     weight_std=ws, ws_epsilon=pick("ws_epsilon"), head=head)


def variants(*, max_stages=4, max_units=3, min_width=4, max_width=32, max_classes=16, block=None,
             preact=None, flatten=None, min_side=None) -> st.SearchStrategy[ResNet]:
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



def _admits(v: ResNet, size: tuple[int, int] | None) -> bool:
    """Whether `v` takes an input of `size` (every layer's output non-empty, a flattened head's
    pool inside the last map)."""
    if size is None:
        return True
    if min(size) < C.min_body_size(v):
        return False
    return not v.head_pool or min(plan.spatial_sizes(v, n)[-1] for n in size) >= v.head_pool


def mutants(variant: ResNet, size: tuple[int, int] | None = None) -> dict[str, list[ResNet]]:
    """`variant` with one convention of `CONVENTIONS` changed, for each convention: every other
    allowed value that makes a valid description (taking an input of `size`, when given).
    Conventions with no such value are left out."""
    return family_mutants(variant, CONVENTIONS, _admits, size)


def mutations(variant, *, size=None, fields=None) -> st.SearchStrategy[tuple[str, ResNet]]:
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
    return family_mutations(mutants, CONVENTIONS, variant, size, fields)
