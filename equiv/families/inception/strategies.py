"""Hypothesis strategies for Inception descriptions: `variants` draws small Inceptions (a short
stem, 1 to max_blocks mixed blocks of Inception v3's five kinds, narrow widths) with every
convention drawn; `mutations` changes one."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from equiv.families.inception import plan
from equiv.families.inception.description import Inception
from equiv.families.inception.zoo import AVG, MAX, conv
from equiv.frameworks import FRAMEWORKS
from equiv.strategies import _draw_integer, _integer, family_mutants, family_mutations

# Every convention a description draws, slim's and Keras' value first.
CONVENTIONS: dict[str, tuple] = {
    "bn_scale": (False, True),
    "bn_epsilon": (1e-3, 1e-5),
    "pool_count_pad": (False, True),
    "transform_input": (False, True),
    "aux_logits": (False, True),
}


def block(kind: str, w: tuple[int, ...]):
    """A mixed block of Inception v3's kind A to E, its widths drawn (`w`: 4 widths)."""
    a, b, c, d = w
    if kind == "A":
        return (((conv(1, 1, a),), ()), ((conv(1, 1, b), conv(5, 5, a)), ()),
                ((conv(1, 1, a), conv(3, 3, c), conv(3, 3, c)), ()), ((AVG, conv(1, 1, d)), ()))
    if kind == "B":
        return (((conv(3, 3, a, 2, "valid"),), ()), ((conv(1, 1, b), conv(3, 3, c), conv(3, 3, c, 2, "valid")), ()),
                ((MAX,), ()))
    if kind == "C":
        return (((conv(1, 1, a),), ()), ((conv(1, 1, b), conv(1, 7, b), conv(7, 1, a)), ()),
                ((conv(1, 1, b), conv(7, 1, b), conv(1, 7, b), conv(7, 1, b), conv(1, 7, c)), ()),
                ((AVG, conv(1, 1, d)), ()))
    if kind == "D":
        return (((conv(1, 1, a), conv(3, 3, b, 2, "valid")), ()),
                ((conv(1, 1, a), conv(1, 7, a), conv(7, 1, a), conv(3, 3, c, 2, "valid")), ()), ((MAX,), ()))
    if kind == "E":
        return (((conv(1, 1, a),), ()), ((conv(1, 1, b),), (conv(1, 3, b), conv(3, 1, b))),
                ((conv(1, 1, c), conv(3, 3, b)), (conv(1, 3, b), conv(3, 1, b))), ((AVG, conv(1, 1, d)), ()))
    raise InvalidArgument(f"unknown block kind {kind!r} (A to E)")


@st.composite
def _variants(draw, max_blocks, min_width, max_width, max_classes) -> Inception:
    n = draw(st.integers(1, _draw_integer(draw, "max_blocks", max_blocks, 1)))
    lo, hi = _draw_integer(draw, "min_width", min_width, 1), _draw_integer(draw, "max_width", max_width, 1)
    if lo > hi:
        raise InvalidArgument(f"min_width={lo} is larger than max_width={hi}")
    width = st.integers(lo, hi)
    # A short stem: a VALID stride-2 conv, a SAME conv, and a VALID max-pool (Inception v3's kinds of layer)
    stem = (conv(3, 3, draw(width), 2, "valid"), conv(3, 3, draw(width)), MAX)[:draw(st.integers(1, 3))]
    kinds = draw(st.lists(st.sampled_from("ABCDE"), min_size=n, max_size=n))
    blocks = tuple(block(k, tuple(draw(width) for _ in range(4))) for k in kinds)
    aux = draw(st.sampled_from(CONVENTIONS["aux_logits"]))
    return Inception(
        name="hypothesis/random", native=draw(st.sampled_from(FRAMEWORKS)),
        description="drawn by equiv.strategies.variants(family='inception')",
        stem=stem, blocks=blocks,
        bn_scale=draw(st.sampled_from(CONVENTIONS["bn_scale"])),
        bn_epsilon=draw(st.sampled_from(CONVENTIONS["bn_epsilon"])),
        pool_count_pad=draw(st.sampled_from(CONVENTIONS["pool_count_pad"])),
        transform_input=draw(st.sampled_from(CONVENTIONS["transform_input"])),
        aux_logits=aux, aux_from=draw(st.integers(0, n - 1)) if aux else 0,
        aux_widths=(draw(width), draw(width)),
        num_classes=draw(st.integers(1, _draw_integer(draw, "max_classes", max_classes, 1))),
    )


def variants(*, max_blocks=2, min_width=2, max_width=8, max_classes=10) -> st.SearchStrategy[Inception]:
    """Small Inceptions: a stem of 1 to 3 layers, 1 to max_blocks mixed blocks of kinds A to E
    (Inception v3's), widths in [min_width, max_width], every convention of `CONVENTIONS` drawn.
    Their smallest input is `equiv.canonical.min_input_size(v)`.

    Example::

        >>> v = variants(max_blocks=2, max_width=4).example()
        >>> 1 <= len(v.blocks) <= 2
        True
    """
    for name, value, least in (("max_blocks", max_blocks, 1), ("min_width", min_width, 1),
                               ("max_width", max_width, 1), ("max_classes", max_classes, 1)):
        _integer(name, value, least)
    if isinstance(min_width, int) and isinstance(max_width, int) and min_width > max_width:
        raise InvalidArgument(f"min_width={min_width} is larger than max_width={max_width}")
    return _variants(max_blocks, min_width, max_width, max_classes)


def _admits(v: Inception, size: tuple[int, int] | None) -> bool:
    if size is None:
        return True
    if v.input_size is not None and tuple(size) != tuple(v.input_size):
        return False
    return min(size) >= plan.min_body_size(v)


def mutants(variant: Inception, size: tuple[int, int] | None = None) -> dict[str, list[Inception]]:
    """`variant` with one convention of `CONVENTIONS` changed, for each convention: every other
    allowed value that makes a valid description taking an input of `size` (when given)."""
    return family_mutants(variant, CONVENTIONS, _admits, size)


def mutations(variant, *, size=None, fields=None) -> st.SearchStrategy[tuple[str, Inception]]:
    """One convention of `variant` changed to another allowed value: (its name, the changed
    description).

    * variant: a Variant or registered name (or a strategy of them).
    * size: (height, width) the changed description must still take; any when None.
    * fields: only these conventions (names of `CONVENTIONS`); all when None.
    """
    return family_mutations(mutants, CONVENTIONS, variant, size, fields)
