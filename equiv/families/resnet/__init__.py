"""The ResNet family: v1, v1.5, v2 (pre-activation) and the seed's variants of them.

    description.py   the `ResNet` description: one field per convention
    zoo.py           the registered networks (tf_slim.nets, keras.applications, torchvision, seed)
    plan.py          parameter names and shapes, taps, sizes, FLOPs
    reference.py     the float64 numpy forward pass, as segments
    calibration.py   random initial parameters
    slim.py, keras.py, torch.py   one builder per backend, with that library's naming
"""

from equiv.families.resnet import plan, reference, zoo
from equiv.families.resnet.calibration import initial_params
from equiv.families.resnet.description import ResNet as Description

__all__ = ["Description", "initial_params", "plan", "reference", "zoo"]
