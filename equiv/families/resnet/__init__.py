"""The ResNet family: v1, v1.5, v2 (pre-activation) and the seed's variants of them.

    description.py   the `ResNet` description: one field per convention
    zoo.py           the registered networks (tf_slim.nets, keras.applications, torchvision, seed)
    plan.py          parameter names and shapes, taps, sizes, FLOPs
    reference.py     the float64 numpy forward pass, as segments
    calibration.py   random initial parameters
    strategies.py    hypothesis strategies: descriptions with every convention drawn, mutations
    slim.py, keras.py, torch.py   one builder per backend, with that library's naming
"""

from equiv.families.resnet import plan, reference, zoo
from equiv.families.resnet.calibration import initial_params
from equiv.families.resnet.description import ResNet as Description

__all__ = ["Description", "initial_params", "plan", "reference", "strategies", "zoo"]


def __getattr__(name):  # strategies need hypothesis, a test dependency: imported when asked
    if name == "strategies":
        import importlib

        return importlib.import_module("equiv.families.resnet.strategies")
    raise AttributeError(name)
