"""The family contract (equiv.families.base), checked on every registered family.

Each family's plan is held to itself and to its numpy reference: the taps the reference computes
are the plan's taps, in its order and of its shapes; its parameters are the plan's; and every
registered backend has a builder module for it, with its dialects. What a family's builds compute
is checked by the backend contract (tests/frameworks/test_contract.py) and the equivalence tests.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from equiv import canonical as C
from equiv import families, reference, weights
from equiv.families.base import Dialect
from equiv.frameworks import FRAMEWORKS, adapter
from equiv.variants import all_variants

FAMILIES = list(families.REGISTRY)


def _smallest(family: str):
    mine = [v for v in all_variants() if v.family == family]
    # ties (VGG-16 in three libraries) go to one that takes any input size: the cheapest to run
    return min(mine, key=lambda v: (C.param_count(v), v.input_size is not None)) if mine else None


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_exposes_the_contract(family):
    f = families.get(family)
    assert f.Description.family == family
    for name in ("param_shapes", "tap_names", "output_tap", "head_taps", "tap_depths", "tap_shapes", "flops",
                 "min_body_size", "unit_count"):
        assert callable(getattr(f.plan, name)), f"{family}: plan.{name}"
    assert callable(f.reference.segments) and callable(f.reference.inference_bn)
    assert callable(f.initial_params)
    assert callable(f.strategies.variants) and callable(f.strategies.mutations) and f.strategies.CONVENTIONS
    assert any(v.family == family for v in all_variants()), f"{family} registers no network in its zoo"


@pytest.mark.parametrize("backend", FRAMEWORKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_backend_has_a_builder_with_its_dialects(family, backend):
    module = importlib.import_module(f"{families.REGISTRY[family]}.{backend}")
    assert callable(module.build) and callable(module.framework_names)
    for hook in adapter(backend).BUILDER:
        assert callable(getattr(module, hook, None)), f"{module.__name__} lacks {hook}: the {backend} backend calls it"
    assert module.DIALECTS and all(isinstance(d, Dialect) for d in module.DIALECTS.values())
    v = _smallest(family)
    names = module.framework_names(v)
    assert list(names) == list(C.param_shapes(v))
    assert len(set(names.values())) == len(names), f"{backend} gives two parameters of {v.name} one name"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_reference_computes_the_plans_taps_in_order_and_shape(family):
    v = _smallest(family)
    size = max(C.min_input_size(v), 33) if v.input_size is None else v.input_size[0]
    x = weights.random_input(v, 2, size, size)
    taps = reference.forward(v, weights.random_params(v, 0), x)
    assert list(taps) == C.tap_names(v)
    shapes = C.tap_shapes(v, size, size)
    assert {t: a.shape[1:] for t, a in taps.items()} == shapes
    assert C.head_taps(v) == C.tap_names(v)[-len(C.head_taps(v)):]
    assert C.output_tap(v) == C.tap_names(v)[-1]
    assert set(C.tap_depths(v)) == set(C.tap_names(v))
    assert all(np.isfinite(a).all() for a in taps.values())


def test_an_unknown_family_or_builder_is_named():
    with pytest.raises(Exception, match="unknown network family 'inception_v9'"):
        families.get("inception_v9")
    v = _smallest(FAMILIES[0])
    with pytest.raises(Exception, match="has no tvm builder"):
        families.builder(v, "tvm")
