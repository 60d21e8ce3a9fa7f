"""The VGG family: tf_slim.nets' vgg_16/vgg_19, keras.applications' VGG16/VGG19, torchvision's
vgg16/vgg19/vgg16_bn, and small VGGs of any shape.

    description.py   the `VGG` description: one field per convention
    zoo.py           the registered networks
    plan.py          parameter names and shapes, taps, sizes, FLOPs
    reference.py     the float64 numpy forward pass, as segments
    calibration.py   random initial parameters
    strategies.py    hypothesis strategies: descriptions with every convention drawn, mutations
    slim.py, keras.py, torch.py   one builder per backend, with that library's naming and layout

The classifier's first dense layer reads a flattened map. Its canonical kernel has one row per
element of that map in NHWC order (what a Keras Flatten gives); slim stores it as a k x k VALID
convolution (the same numbers, reshaped), torchvision as a Linear over an NCHW flatten (the rows
permuted, then transposed). Each is a layout rule of its builder (`slim_shape`,
`nchw_flattened`), applied where parameters cross into that backend.
"""

from equiv.families.vgg import plan, reference, zoo
from equiv.families.vgg.calibration import initial_params
from equiv.families.vgg.description import VGG as Description

__all__ = ["Description", "initial_params", "plan", "reference", "strategies", "zoo"]


def __getattr__(name):  # strategies need hypothesis, a test dependency: imported when asked
    if name == "strategies":
        import importlib

        return importlib.import_module("equiv.families.vgg.strategies")
    raise AttributeError(name)
