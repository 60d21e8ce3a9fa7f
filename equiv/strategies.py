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

@st.composite
def _family_mutations(draw, mutants, variant, size, fields) -> tuple[str, Variant]:
    from hypothesis import reject

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


def family_mutants(variant, conventions, admits, size=None, changes=None) -> dict[str, list[Variant]]:
    """What every family's `mutants` returns: `variant` with one convention of `conventions` changed,
    for each convention, every other allowed value that makes a valid description which
    `admits(m, size)`; conventions with no such value are left out. `changes(v, name, value, size)`
    gives the fields to replace for one value (None: skip it); default {name: value}."""
    v = _variant_value(variant)
    out: dict[str, list[Variant]] = {}
    for name, values in conventions.items():
        alternatives = []
        for value in values:
            if value == getattr(v, name):
                continue
            fields = {name: value} if changes is None else changes(v, name, value, size)
            if fields is None:
                continue
            try:
                m = v.replace(**fields)
            except ValueError:  # not a description (a TF SAME pool padding with zeros, say)
                continue
            if admits(m, size):
                alternatives.append(m)
        if alternatives:
            out[name] = alternatives
    return out


def family_mutations(mutants, conventions, variant, size=None, fields=None) -> st.SearchStrategy[tuple[str, Variant]]:
    """What every family's `mutations` draws: one convention of `variant` changed, as the family's
    `mutants(v, size)` offers them, among `fields` (names of its `conventions`) when given."""
    _check_variant(variant)
    if fields is not None:
        unknown = sorted(set(fields) - set(conventions))
        if unknown or isinstance(fields, str):
            raise InvalidArgument(f"fields={fields!r} must be a collection of names of CONVENTIONS")
        fields = frozenset(fields)
    return _family_mutations(mutants, variant, size, fields)



# ---------------------------------------------------------------------------------------
# Descriptions: each family draws its own (equiv/families/<family>/strategies.py)


def _family(family):
    from equiv import families

    if family is None:
        family = next(iter(families.REGISTRY))  # the first registered: ResNet
    try:
        return families.get(family).strategies
    except EquivError as e:
        raise InvalidArgument(f"family={family!r}: {e}") from None


def variants(*, family=None, **options) -> st.SearchStrategy[Variant]:
    """Small random descriptions of a network family, every convention field drawn, so that any
    convention one framework realises differently from another shows up.

    * family: a name of equiv.families.REGISTRY; the first registered (ResNet) when None.
    * options: the family's own (for ResNet: max_stages, max_units, min_width, max_width,
      max_classes, block, preact, flatten, min_side; see equiv.families.resnet.strategies).

    Example::

        >>> v = variants(max_stages=2, max_width=8, block="basic").example()
        >>> v.block, len(v.depths) <= 2, max(v.widths) <= 8
        ('basic', True, True)
    """
    return _family(family).variants(**options)


def _check_native(native) -> None:
    if native is not None and not isinstance(native, st.SearchStrategy) and native not in FRAMEWORKS:
        raise InvalidArgument(f"native={native!r} must be one of {', '.join(FRAMEWORKS)}")


@st.composite
def _registered_variants(draw, native, max_units) -> Variant:
    native_ = draw(_strategy(native))
    _check_native(native_)
    units = None if max_units is None else _draw_integer(draw, "max_units", max_units, 1)
    pool = [v for v in all_variants()
            if (native_ is None or v.native == native_) and (units is None or C.unit_count(v) <= units)]
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
# Mutations: one convention changed (by the variant's family)


@st.composite
def _mutations(draw, variant, size, fields) -> tuple[str, Variant]:
    from equiv import families

    v = _draw_variant(draw, variant)
    return draw(families.of(v).strategies.mutations(v, size=size, fields=fields))


def mutations(variant, *, size=None, fields=None) -> st.SearchStrategy[tuple[str, Variant]]:
    """One convention of `variant` changed to another allowed value: (its name, the changed
    description), drawn among those that can change (its family's `CONVENTIONS`).

    * variant: a Variant or registered name (or a strategy of them).
    * size: (height, width) the changed description must still take; any when None.
    * fields: only these conventions; all when None.

    Example::

        >>> name, m = mutations("torchvision/resnet18", size=(32, 32)).example()
        >>> getattr(m, name) != getattr(get("torchvision/resnet18"), name)
        True
    """
    if not isinstance(variant, st.SearchStrategy):  # checked at once, fields too, by its family
        from equiv import families

        v = _variant_value(variant)
        return families.of(v).strategies.mutations(v, size=size, fields=fields)
    if isinstance(fields, str):
        raise InvalidArgument(f"fields={fields!r} must be a collection of convention names")
    return _mutations(variant, size, None if fields is None else frozenset(fields))
