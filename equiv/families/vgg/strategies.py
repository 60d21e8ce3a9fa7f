"""Hypothesis strategies for VGG descriptions: `variants` draws small VGGs with every convention
drawn, `mutations` changes one."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from equiv.families.vgg import plan
from equiv.families.vgg.description import VGG
from equiv.frameworks import FRAMEWORKS
from equiv.strategies import _draw_integer, _integer, _strategy, family_mutants, family_mutations

# Every convention a description draws, the registered references' value first.
CONVENTIONS: dict[str, tuple] = {
    "conv_bias": (True, False),
    "batch_norm": (False, True),
    "bn_epsilon": (1e-5, 1e-3),
    "adaptive_pool": (None, (7, 7), (2, 3), (1, 1)),
}


@st.composite
def _variants(draw, max_stages, max_convs, min_width, max_width, max_fc, max_classes, adaptive) -> VGG:
    n = draw(st.integers(1, _draw_integer(draw, "max_stages", max_stages, 1)))
    per = _draw_integer(draw, "max_convs", max_convs, 1)
    lo, hi = _draw_integer(draw, "min_width", min_width, 1), _draw_integer(draw, "max_width", max_width, 1)
    if lo > hi:
        raise InvalidArgument(f"min_width={lo} is larger than max_width={hi}")
    fc = _draw_integer(draw, "max_fc", max_fc, 0)
    adaptive_ = draw(st.booleans() if adaptive is None else _strategy(adaptive))
    if not isinstance(adaptive_, bool):
        raise InvalidArgument(f"adaptive={adaptive_!r} must be True or False")
    pool = draw(st.sampled_from(CONVENTIONS["adaptive_pool"][1:])) if adaptive_ else None
    side = 2 ** n
    size = None if adaptive_ else (draw(st.integers(side, side + 9)), draw(st.integers(side, side + 9)))
    return VGG(
        name="hypothesis/random", native=draw(st.sampled_from(FRAMEWORKS)),
        description="drawn by equiv.strategies.variants(family='vgg')",
        convs=tuple(draw(st.lists(st.integers(1, per), min_size=n, max_size=n))),
        widths=tuple(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))),
        conv_bias=draw(st.sampled_from(CONVENTIONS["conv_bias"])),
        batch_norm=draw(st.sampled_from(CONVENTIONS["batch_norm"])),
        bn_epsilon=draw(st.sampled_from(CONVENTIONS["bn_epsilon"])),
        fc_widths=tuple(draw(st.lists(st.integers(lo, hi), min_size=0, max_size=fc))),
        adaptive_pool=pool, input_size=size,
        num_classes=draw(st.integers(1, _draw_integer(draw, "max_classes", max_classes, 1))),
    )


def variants(*, max_stages=3, max_convs=2, min_width=2, max_width=16, max_fc=2, max_classes=10,
             adaptive=None) -> st.SearchStrategy[VGG]:
    """Small VGGs: 1 to max_stages stages of 1 to max_convs convs, widths in [min_width,
    max_width], 0 to max_fc hidden dense layers, every convention of `CONVENTIONS` drawn.

    * adaptive: True for an adaptive average pool before the flatten (any input size), False
      for a flatten of the last pool (which fixes the input size); drawn when None.

    Example::

        >>> v = variants(max_stages=2, max_width=8).example()
        >>> len(v.convs) <= 2 and max(v.widths) <= 8
        True
    """
    for name, value, least in (("max_stages", max_stages, 1), ("max_convs", max_convs, 1),
                               ("min_width", min_width, 1), ("max_width", max_width, 1),
                               ("max_fc", max_fc, 0), ("max_classes", max_classes, 1)):
        _integer(name, value, least)
    if isinstance(min_width, int) and isinstance(max_width, int) and min_width > max_width:
        raise InvalidArgument(f"min_width={min_width} is larger than max_width={max_width}")
    if adaptive is not None and not isinstance(adaptive, (bool, st.SearchStrategy)):
        raise InvalidArgument(f"adaptive={adaptive!r} must be True or False")
    return _variants(max_stages, max_convs, min_width, max_width, max_fc, max_classes, adaptive)


def _admits(v: VGG, size: tuple[int, int] | None) -> bool:
    if size is None:
        return True
    if v.input_size is not None and tuple(size) != tuple(v.input_size):
        return False
    return min(size) >= plan.min_body_size(v)


def _changes(v: VGG, name: str, value, size) -> dict | None:
    """Dropping the adaptive pool fixes the input size to `size` (or the description's own)."""
    if name == "adaptive_pool" and value is None and v.input_size is None:
        return None if size is None else {name: value, "input_size": tuple(size)}
    return {name: value}


def mutants(variant: VGG, size: tuple[int, int] | None = None) -> dict[str, list[VGG]]:
    """`variant` with one convention of `CONVENTIONS` changed, for each convention: every other
    allowed value that makes a valid description taking an input of `size` (when given).
    Dropping the adaptive pool fixes the input size to `size` (or the description's own)."""
    return family_mutants(variant, CONVENTIONS, _admits, size, _changes)


def mutations(variant, *, size=None, fields=None) -> st.SearchStrategy[tuple[str, VGG]]:
    """One convention of `variant` changed to another allowed value: (its name, the changed
    description).

    * variant: a Variant or registered name (or a strategy of them).
    * size: (height, width) the changed description must still take; any when None.
    * fields: only these conventions (names of `CONVENTIONS`); all when None.
    """
    return family_mutations(mutants, CONVENTIONS, variant, size, fields)
