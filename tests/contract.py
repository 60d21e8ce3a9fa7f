"""Checks every adapter must pass, shared by the per-framework tests."""

import numpy as np

from equiv import canonical as C


def assert_exports_exactly(v, exported, params, where=""):
    """`exported` holds the canonical names of `v` in order, float32, each equal to `params` bit for bit."""
    shapes = C.param_shapes(v)
    assert list(exported) == list(shapes), where
    for name, a in exported.items():
        assert a.dtype == np.float32 and a.shape == shapes[name], (where, name)
        assert np.array_equal(a, params[name]), (where, name)


# Registered variants that repeat what the default suite's other cases hold carry the slow marker in the
# heavy per-variant tests (check, port round trips, canonical shapes, each adapter's taps), to keep CI within
# its budget; `tox -e slow` (and `-m ""`) runs them all. Each one's conventions are held by a default case:
# - resnext101_32x8d: resnext50_32x4d's (groups 32) at 101 layers; wide_resnet50_2: wider bottlenecks,
#   expansion 2, groups 1, as resnext50 and the drawn descriptions; real torchvision checks both tap by tap
#   in the torchvision stage;
# - timm/resnetv2_50 and keras_hub/resnet_v2_50 share the torch-style pre-activation; keras_hub/resnet_v2_50
#   stays (its native build is real keras-hub, met only here), timm's own model meets equiv in the stage;
# - hf/resnet-50 is no variant of its own any more (torchvision/resnet50 in the hf dialect, an alias);
#   hf/resnet-50-features keeps its headless head in the default suite;
# - keras_hub/resnet_50: keras-hub's v1, on the builder path keras_hub/resnet_v2_50 takes.
REPEATS = {"torchvision/resnext101_32x8d", "torchvision/wide_resnet50_2", "timm/resnetv2_50", "keras_hub/resnet_50"}


def repeat_marks(v) -> list:
    import pytest

    return [pytest.mark.slow] if v.name in REPEATS else []
