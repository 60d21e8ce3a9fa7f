"""The Inception v3 family: tf_slim.nets' inception_v3, keras.applications' InceptionV3,
torchvision's inception_v3, and small Inceptions of any shape (fewer, narrower mixed blocks).

    description.py   the `Inception` description: the network as data, one field per convention
    zoo.py           the registered networks (and Inception v3 itself as data: STEM, BLOCKS)
    plan.py          parameter names and shapes, taps, sizes, FLOPs
    reference.py     the float64 numpy forward pass, as segments
    calibration.py   random initial parameters
    strategies.py    hypothesis strategies: descriptions with every convention drawn, mutations
    slim.py, keras.py, torch.py   one builder per backend, with that library's naming and layout

A convention the references differ in is a field (BatchNorm scale, the branches' average pool
counting its padding, transform_input, the auxiliary head, 1001 classes); how a library stores a
layer (slim's 1x1-conv logits, torch's (out, in) Linear) is its builder's layout.
"""

from equiv.families.inception import plan, reference, zoo
from equiv.families.inception.calibration import calibration_size, initial_params
from equiv.families.inception.description import Inception as Description

__all__ = ["Description", "calibration_size", "initial_params", "plan", "reference", "strategies", "zoo"]


def __getattr__(name):  # strategies need hypothesis, a test dependency: imported when asked
    if name == "strategies":
        import importlib

        return importlib.import_module("equiv.families.inception.strategies")
    raise AttributeError(name)
