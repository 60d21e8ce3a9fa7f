"""equiv.strategies as users call them: hypothesis' conventions, and what each one draws."""

import doctest
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument, NonInteractiveExampleWarning

import equiv
from equiv import canonical as C
from equiv import strategies as es
from equiv.families.resnet import plan as P
from equiv.families.resnet import strategies as rs

R18 = equiv.get("torchvision/resnet18")


def test_every_docstring_example_holds():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        result = doctest.testmod(es)
    assert result.failed == 0 and result.attempted >= len(es.__all__)
    assert all(">>>" in getattr(es, name).__doc__ for name in es.__all__)


@pytest.mark.parametrize("make,option", [
    (lambda: es.variants(max_stages=0), "max_stages=0"),
    (lambda: es.variants(max_units=1.5), "max_units=1.5"),
    (lambda: es.variants(min_width=9, max_width=8), "min_width=9"),
    (lambda: es.variants(block="wide"), "block='wide'"),
    (lambda: es.variants(preact="yes"), "preact='yes'"),
    (lambda: es.registered_variants(native="caffe"), "native='caffe'"),
    (lambda: es.input_shapes(R18, batch=0), "batch=0"),
    (lambda: es.input_shapes(R18, min_side=9, max_side=8), "max_side=8"),
    (lambda: es.input_shapes("torchvision/resnet81"), "variant='torchvision/resnet81'"),
    (lambda: es.inputs(R18, dtype="int8"), "dtype='int8'"),
    (lambda: es.weights(R18, seed=-1), "seed=-1"),
    (lambda: es.variants(flatten="yes"), "flatten='yes'"),
    (lambda: es.variants(min_side=0), "min_side=0"),
    (lambda: es.mutations(R18, fields=["stem_colour"]), r"fields=\['stem_colour'\]"),
    (lambda: es.mutations(R18, fields="conv_padding"), "fields='conv_padding'"),
])
def test_a_bad_value_is_refused_at_once_by_name(make, option):
    with pytest.raises(InvalidArgument, match=option.replace("(", r"\(").replace(".", r"\.")):
        make()


@pytest.mark.parametrize("strategy,option", [
    (es.variants(max_stages=st.just(0)), "max_stages=0"),
    (es.input_shapes(R18, min_side=st.just(0)), "min_side=0"),
    (es.inputs(R18, dtype=st.just("int8")), "dtype='int8'"),
    (es.registered_variants(native="torch", max_units=st.just(1)), "no registered variant"),
])
def test_a_bad_value_from_a_strategy_is_refused_when_drawn(strategy, option):
    with pytest.raises(InvalidArgument, match=option):
        find(strategy, lambda _: True)


@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
@given(v=es.variants(max_stages=2, max_width=8, block=st.just("basic"), preact=True), data=st.data())
def test_drawn_descriptions_inputs_and_weights_fit_each_other(v, data):
    assert v.block == "basic" and v.preact and 1 <= len(v.depths) <= 2 and max(v.widths) <= 8
    x = data.draw(es.inputs(v, batch=st.integers(1, 2), dtype=st.sampled_from(["float32", "float64"])))
    smallest = C.min_input_size(v)
    assert x.dtype in (np.float32, np.float64) and 1 <= x.shape[0] <= 2 and x.shape[3] == v.in_channels
    assert all(smallest <= side <= smallest + 12 for side in x.shape[1:3])
    w = data.draw(es.weights(v, seed=st.integers(0, 3)))
    C.check_params(v, w)  # raises unless they are exactly v's parameters


def test_odd_and_even_sides_are_both_reachable():
    for parity in (0, 1):
        shape = find(es.input_shapes(R18, min_side=16, max_side=40), lambda s, p=parity: s[1] % 2 == p)
        assert shape[1] % 2 == parity


def test_registered_variants_obey_their_filters():
    small = find(es.registered_variants(native="torch", max_units=16),
                 lambda v: v.family == "resnet" and v.block == "bottleneck")
    assert small.native == "torch" and sum(small.depths) <= 16
    slim = find(es.registered_variants(native="slim"), lambda v: v.family == "resnet" and v.preact)
    assert slim.name.startswith("slim/resnet_v2")


def test_weights_are_a_function_of_the_seed():
    tiny = R18.replace(name="tiny", widths=(2, 2, 2, 2), stem_width=2, num_classes=2)
    a = find(es.weights(tiny, seed=5), lambda _: True)
    b = find(es.weights(tiny, seed=5), lambda _: True)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(v=es.variants(max_stages=2, max_width=8, flatten=st.just(True), min_side=16), data=st.data())
def test_a_mutation_changes_one_convention_and_keeps_the_input_size(v, data):
    assert min(v.input_size) >= 16
    field, m = data.draw(es.mutations(v, size=v.input_size))
    changed = {k for k, value in v.conventions().items() if m.conventions()[k] != value}
    assert changed == {field} and field in rs.CONVENTIONS and getattr(m, field) in rs.CONVENTIONS[field]
    C.check_input_size(m, *v.input_size)
    assert all(n >= m.head_pool for n in (P.spatial_sizes(m, side)[-1] for side in v.input_size))


def test_mutants_list_every_other_valid_value():
    pools = rs.mutants(R18, (32, 32))["pool_padding"]
    assert sorted(m.pool_padding for m in pools) == ["tf_same", "valid"]  # R18 pads symmetrically
    tf_pool = R18.replace(pool_padding="tf_same")
    assert "pool_pad_value" not in rs.mutants(tf_pool)  # TF SAME pools pad with -inf only
    assert [m.stride_conv for m in rs.mutants(R18)["stride_conv"]] == [2]  # a basic block has two convs
