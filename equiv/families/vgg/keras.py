"""The VGG family in Keras 3: keras.applications' VGG16/VGG19, and a functional builder for any
description, named as keras.applications names its layers:

    stage{s}/conv{k}   block{s}_conv{k}   (its BatchNorm block{s}_conv{k}_bn, then block{s}_conv{k}_relu)
    stage{s}/pool      block{s}_pool
    flatten            flatten            (after avg_pool, an adaptive average pool, where there is one)
    fc6, fc7, ...      fc1, fc2, ...
    logits             predictions

A Dense after a Flatten of NHWC maps is the canonical layout: nothing is transposed.
"""

from __future__ import annotations

import re

from equiv.errors import FrameworkError
from equiv.families.base import Dialect, library_build
from equiv.families.vgg import plan
from equiv.families.vgg.description import VGG
from equiv.frameworks.keras import keras


def _applications(v: VGG):
    """keras.applications' own model: its flattened head needs the static 224x224 input."""
    function = getattr(keras.applications, v.reference.rsplit(".", 1)[1])
    return function(weights=None, include_top=True, classes=v.num_classes, classifier_activation=None,
                    input_shape=(*v.input_size, v.in_channels))


DIALECTS = {
    "keras.applications": Dialect("keras.applications.", build=_applications, changed="refuse"),
}


def keras_layer(v: VGG, layer: str) -> str:
    m = re.fullmatch(r"stage(\d+)/conv(\d+)(/bn)?", layer)
    if m:
        s, k, bn = m.groups()
        return f"block{s}_conv{k}" + ("_bn" if bn else "")
    m = re.fullmatch(r"stage(\d+)/pool", layer)
    if m:
        return f"block{m.group(1)}_pool"
    m = re.fullmatch(r"fc(\d+)", layer)
    if m:
        return f"fc{int(m.group(1)) - 5}"
    if layer == "logits":
        return "predictions"
    return layer


def framework_names(variant: VGG) -> dict[str, str]:
    names = {}
    for name in plan.param_shapes(variant):
        layer, field = name.rsplit("/", 1)
        names[name] = f"{keras_layer(variant, layer)}/{field}"
    return names


def build(variant: VGG, *, reference: bool | None = None):
    _, make = library_build(DIALECTS, "keras", variant, reference)
    return make(variant) if make else _generic(variant)


if keras is not None:

    @keras.saving.register_keras_serializable(package="equiv")
    class AdaptiveAveragePooling(keras.layers.Layer):
        """PyTorch's AdaptiveAvgPool2d on NHWC maps of any size, the input's size read when it
        runs (keras.layers.AdaptiveAveragePooling2D needs it static): each output cell the mean of
        its bin [floor(i n / out), ceil((i + 1) n / out)) on each axis."""

        def __init__(self, output_size, **kwargs):
            super().__init__(**kwargs)
            self.output_size = tuple(int(n) for n in output_size)

        def call(self, x):
            ops = keras.ops
            shape = ops.shape(x)

            def bins(n, out):
                return [((i * n) // out, ((i + 1) * n + out - 1) // out) for i in range(out)]

            rows = []
            for a, b in bins(shape[1], self.output_size[0]):
                rows.append(ops.stack([ops.mean(x[:, a:b, c:d, :], axis=(1, 2))
                                       for c, d in bins(shape[2], self.output_size[1])], axis=1))
            return ops.stack(rows, axis=1)

        def compute_output_shape(self, shape):
            return shape[0], *self.output_size, shape[-1]

        def get_config(self):
            return {**super().get_config(), "output_size": self.output_size}


def _generic(v: VGG):
    inputs = keras.Input(shape=(*(v.input_size if v.adaptive_pool is None else (None, None)), v.in_channels))
    x = inputs
    for c in plan.convs(v):
        name = keras_layer(v, c.name)
        x = keras.layers.Conv2D(c.cout, 3, padding="same", use_bias=v.conv_bias,
                                activation=None if v.batch_norm else "relu", name=name)(x)
        if v.batch_norm:
            x = keras.layers.BatchNormalization(epsilon=v.bn_epsilon, name=f"{name}_bn")(x)
            x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
        if c.index == v.convs[c.stage - 1]:
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{c.stage}_pool")(x)
    if v.adaptive_pool is not None:
        x = AdaptiveAveragePooling(v.adaptive_pool, name="avg_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)  # NHWC order: the canonical rows
    for name, _, out in plan.dense_layers(v):
        x = keras.layers.Dense(out, activation=None if name == "logits" else "relu",
                               name=keras_layer(v, name))(x)
    return keras.Model(inputs, x, name=re.sub(r"\W", "_", v.name))


def tap_outputs(v: VGG, model) -> dict:
    present = {layer.name for layer in model.layers}
    outputs = {}
    for tap in plan.tap_names(v):
        layer = keras_layer(v, tap)
        candidates = (f"{layer}_relu", layer) if tap.startswith("stage") else (layer,)
        found = [n for n in candidates if n in present]
        if not found:
            raise FrameworkError(f"model {model.name} has none of the layers {candidates} for tap {tap}")
        outputs[tap] = model.get_layer(found[0]).output
    return outputs


def preprocessing(v: VGG) -> str:
    """keras.applications.vgg16.preprocess_input: caffe mode (BGR, ImageNet mean subtracted)."""
    return "keras-caffe"
