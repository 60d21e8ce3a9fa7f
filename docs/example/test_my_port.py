"""Our PyTorch port of the reference ResNet-18 must stay equal to it, layer by layer.

A user's own test file: equiv's pytest plugin gives the `equiv_*` fixtures (they skip where a
framework is missing), `assert_equivalent` does the comparison, and equiv.strategies draws the
inputs and networks.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import equiv
from equiv import strategies as es
from equiv.testing import assert_equivalent
from equiv.weights import random_params

VARIANT = "torchvision/resnet18"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, equiv_torch):
    """Stands in for your trained checkpoint: a state_dict of seeded weights."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    model = equiv.build(VARIANT, "torch", weights=random_params(equiv.get(VARIANT), seed=0))
    equiv_torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def my_port(checkpoint, equiv_torch):
    """Your port. Any nn.Module with torchvision's parameter names will do; it runs its own forward."""
    model = equiv.build(VARIANT, "torch")
    model.load_state_dict(equiv_torch.load(checkpoint, weights_only=True))
    return model


def test_my_port_is_the_reference(my_port):
    # The variant side runs the reference implementation with my_port's weights; every tap is compared.
    assert_equivalent(my_port, VARIANT, input_size=(32, 32))


def test_the_checkpoint_means_the_same_in_keras(checkpoint, equiv_keras):
    keras_model = equiv.build(VARIANT, "keras", weights=checkpoint)
    assert_equivalent(checkpoint, keras_model, variant=VARIANT, input_size=(33, 31))


@given(x=es.inputs(VARIANT, batch=st.integers(1, 2), min_side=17, max_side=40))
def test_my_port_agrees_on_any_input(my_port, x):
    assert_equivalent(my_port, VARIANT, x=x, taps="logits")


@given(v=es.variants(max_stages=2, max_width=8), data=st.data())
def test_small_descriptions_agree_in_torch_and_keras(v, data, equiv_torch, equiv_keras):
    w = data.draw(es.weights(v))
    x = data.draw(es.inputs(v, batch=1))
    assert_equivalent(equiv.build(v, "torch", weights=w), equiv.build(v, "keras", weights=w), variant=v, x=x)
