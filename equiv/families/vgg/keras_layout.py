"""The VGG family's Keras 3 `.weights.h5` layout, without Keras (equiv.keras_h5).

A VGG is a chain, so its Keras model lists its layers in the order they are called:
equiv.families.vgg.keras._generic, layer for layer, which is also keras.applications' VGG16 and
VGG19 with their top (its input, 3x3 convs with their ReLU inside, `block{s}_pool` max-pools,
`flatten`, `fc1`, `fc2`, `predictions`). A BatchNorm VGG adds a BatchNormalization and an
Activation after each conv; torchvision's adaptive pool is equiv's `AdaptiveAveragePooling` layer.
tests/test_keras_h5.py checks the files written from this against Keras' own loader and saver.
"""

from __future__ import annotations

from equiv.families.vgg import plan
from equiv.families.vgg.description import VGG
from equiv.families.vgg.keras import framework_names, keras_layer
from equiv.keras_h5 import Graph


def graph(v: VGG) -> Graph:
    g = Graph(framework_names(v))
    x = g.add("input_layer", "InputLayer")
    for c in plan.convs(v):
        name = keras_layer(v, c.name)
        x = g.add(name, "Conv2D", x)
        if v.batch_norm:
            x = g.add(f"{name}_relu", "Activation", g.add(f"{name}_bn", "BatchNormalization", x))
        if c.index == v.convs[c.stage - 1]:
            x = g.add(f"block{c.stage}_pool", "MaxPooling2D", x)
    if v.adaptive_pool is not None:
        x = g.add("avg_pool", "AdaptiveAveragePooling", x)
    x = g.add("flatten", "Flatten", x)
    for name, _, _ in plan.dense_layers(v):
        x = g.add(keras_layer(v, name), "Dense", x)
    return g
