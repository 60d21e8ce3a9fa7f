import dataclasses

import pytest

from equiv import canonical as C
from equiv import variants as V
from equiv.errors import EquivError, UnknownVariantError

REQUIRED = [f"slim/resnet_v{k}_{d}" for k in (1, 2) for d in (50, 101, 152)]
REQUIRED += [f"keras/ResNet{d}{s}" for s in ("", "V2") for d in (50, 101, 152)]
REQUIRED += [f"torchvision/resnet{d}" for d in (18, 34, 50, 101, 152)]
REQUIRED += ["slim/vgg_16", "slim/vgg_19", "keras/VGG16", "keras/VGG19", "torchvision/vgg16", "torchvision/vgg19",
             "torchvision/vgg16_bn"]


def test_required_variants_are_registered():
    assert set(REQUIRED) <= set(V.names())


@pytest.mark.parametrize("name", REQUIRED)
def test_native_framework_matches_prefix(name):
    v = V.get(name)
    assert v.native == {"slim": "slim", "keras": "keras", "torchvision": "torch"}[v.framework]


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        V.register(V.get("slim/resnet_v2_50"))


def test_unknown_variant_suggests_close_names():
    with pytest.raises(UnknownVariantError, match="did you mean.*slim/resnet_v2_50"):
        V.get("slim/resnet_v2_5O")
    with pytest.raises(UnknownVariantError, match="torchvision/resnet50"):
        V.get("resnet50")


def test_num_classes_override_is_a_copy():
    v = V.get("slim/resnet_v2_50", num_classes=1000)
    assert v.num_classes == 1000 and V.get("slim/resnet_v2_50").num_classes == 1001
    with pytest.raises(EquivError):
        V.get("slim/resnet_v2_50", num_classes=0)


def test_variants_that_differ_in_a_convention_are_distinct():
    # Same parameters one to one, different functions (DESIGN.md): they must differ as data.
    a, b = V.get("keras/ResNet50V2"), V.get("slim/resnet_v2_50", num_classes=1000)
    assert C.param_shapes(a) == C.param_shapes(b)
    assert a.conventions() != b.conventions()
    assert {k for k in a.conventions() if a.conventions()[k] != b.conventions()[k]} >= {
        "pool_padding", "pool_pad_value", "bn_epsilon"}


# One network that two libraries ship as the same function: VGG-16 and VGG-19 in tf_slim.nets and
# keras.applications (slim's convolutional classifier is Keras' Flatten + Dense at 224x224).
# (transformers' ResNet-50 is no longer one: hf/resnet-50 is torchvision/resnet50 in the hf dialect, an alias.)
SAME_NETWORK = {frozenset({"slim/vgg_16", "keras/VGG16"}), frozenset({"slim/vgg_19", "keras/VGG19"})}


def test_every_registered_variant_has_a_distinct_description():
    convs = {}
    for v in V.all_variants():
        key = (v.family, tuple(sorted(v.conventions().items())))
        same = key in convs and frozenset({v.name, convs[key]}) in SAME_NETWORK
        assert key not in convs or same, f"{v.name} duplicates {convs.get(key)}"
        convs[key] = v.name


def test_variant_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        V.get("slim/resnet_v2_50").bn_epsilon = 1.0


def test_bad_descriptions_are_refused():
    v = V.get("torchvision/resnet18")
    with pytest.raises(ValueError, match="one entry per stage"):
        v.replace(depths=(1, 2))
    with pytest.raises(ValueError, match="stride_conv"):
        v.replace(stride_conv=3)


def test_public_functions_are_not_shadowed_by_submodules():
    import equiv
    import equiv.checking  # noqa: F401
    import equiv.porting  # noqa: F401

    assert callable(equiv.check) and callable(equiv.port) and callable(equiv.diff)
    assert callable(equiv.load_weights) and callable(equiv.build)
