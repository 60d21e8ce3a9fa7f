"""The seed's Keras network, `resnet_v2_50()`, on Keras 3.

What changed from the seed, and why:

* `from tensorflow.contrib.layers.python.layers import utils` is gone (tf.contrib left
  TensorFlow 2); `utils.last_dimension(inputs.get_shape(), min_rank=4)` is the last entry of
  the tensor's shape.
* `Input(batch_shape=(None, weights, hight, channel))` is `Input(shape=(weights, hight,
  channel))`; Keras 3 has no batch_shape argument on Input.
* Every layer gets a name in keras.applications' scheme (`conv2_block1_1_conv`, ...), so equiv
  finds its parameters and taps by name. The seed's own Keras 2 file, whose layers are
  auto-named (`conv2d_7`), is read by creation order instead (`keras2_layer_order`).
* `resnet_v2` takes the class count of the variant (the seed: 10).

Nothing else changes a number, quirks included: BatchNormalization (epsilon 1e-3, with scale)
without ReLU on each unit's input, the identity taken from that normalised input, a ReLU on
every conv (the last and the projection's too), no ReLU after the add, `same` padding on the
strided 3x3 (TensorFlow's asymmetric SAME), and the AveragePooling2D(2) + Flatten + softmax
Dense head, which fixes the input at 224x224. The seed compares the integer stride with
`(1, 1)`, which is never true, so even a stride-1 identity goes through a 1x1 max-pool
(which changes no number); that stays too.
"""

from __future__ import annotations

import collections

import keras
from keras.layers import Add, AveragePooling2D, BatchNormalization, Conv2D, Dense, Flatten, Input, MaxPool2D, ReLU
from keras.layers import ZeroPadding2D
from keras.models import Model


class Block(collections.namedtuple('block', ['name', 'residual_unit', 'args'])):
    'A named tuple descrbing a RseNet Block'


def residual_unit(inputs, depth, residual_depth, stride, name):
    depth_input = inputs.shape[-1]  # the seed: utils.last_dimension(inputs.get_shape(), min_rank=4)
    inputs = BatchNormalization(axis=3, name=f"{name}_preact_bn")(inputs)
    if depth == depth_input:
        if stride == (1, 1):
            identity = inputs
        else:
            identity = MaxPool2D(pool_size=(1, 1), strides=stride, name=f"{name}_0_pool")(inputs)
    else:
        identity = Conv2D(filters=depth, kernel_size=1, strides=stride, activation='relu', name=f"{name}_0_conv")(inputs)
    x = Conv2D(residual_depth, kernel_size=1, strides=(1, 1), padding='same', activation='relu', name=f"{name}_1_conv")(inputs)
    x = Conv2D(residual_depth, kernel_size=3, strides=stride, padding='same', activation='relu', name=f"{name}_2_conv")(x)
    x = Conv2D(depth, kernel_size=1, strides=(1, 1), padding='same', activation='relu', name=f"{name}_3_conv")(x)
    out_puts = Add(name=f"{name}_out")([x, identity])  # the seed: add([x, identity])
    return out_puts


def resnet_v2_50(classes=10):
    # blocks = [Block('block1', residual_unit, [(64, 64, 2)])]
    blocks = [Block('block1', residual_unit, [(256, 64, 1), (256, 64, 1), (256, 64, 2)]),
              Block('block2', residual_unit, [(512, 128, 1)] * 3 + [(512, 128, 2)]),
              Block('block3', residual_unit, [(1024, 256, 1)] * 5 + [(1024, 256, 2)]),
              Block('block4', residual_unit, [(2048, 512, 1)] * 3)]
    return resnet_v2(blocks, 224, 224, 3, classes)


def resnet_v2(blocks, weights, hight, channel, classes):
    inputs = Input(shape=(weights, hight, channel))  # the seed: Input(batch_shape=(None, ...))
    x = ZeroPadding2D((3, 3), name="conv1_pad")(inputs)
    x = Conv2D(filters=64, kernel_size=(7, 7), strides=(2, 2), padding='valid', name="conv1_conv")(x)
    x = MaxPool2D(pool_size=(3, 3), strides=(2, 2), name="pool1_pool")(x)
    for s, block in enumerate(blocks, start=2):
        for i, tuple_value in enumerate(block.args):
            depth, depth_bottleneck, stride = tuple_value
            x = block.residual_unit(x, depth=depth, residual_depth=depth_bottleneck, stride=stride,
                                    name=f"conv{s}_block{i + 1}")
    x = BatchNormalization(axis=3, name="post_bn")(x)
    x = ReLU(name="post_relu")(x)
    x = AveragePooling2D(pool_size=(2, 2), name="avg_pool_pool")(x)
    x = Flatten(name="avg_pool")(x)
    net = Dense(units=classes, activation='softmax', name="predictions")(x)
    model = Model(inputs, net)
    return model


def build(variant) -> keras.Model:
    """The seed's model for `variant` (seed/keras_resnet_v2_50, any class count)."""
    return resnet_v2_50(classes=variant.num_classes)


def keras2_layer_order(variant) -> dict[str, list[str]]:
    """Canonical layers of each Keras layer class, in the order the seed's code creates them.

    A Keras 2 model names layers it is not told to name by class and a per-session counter
    (`conv2d`, `conv2d_1`, ...), so the counter gives the creation order, which is: the stem
    conv; per unit its BatchNorm, then the projection (when there is one), then conv1..conv3;
    the final BatchNorm; the Dense."""
    from equiv.families.resnet import plan

    convs, norms = ["stem/conv"], []
    for unit in plan.units(variant):
        norms.append(f"{unit.name}/preact")
        if unit.shortcut:
            convs.append(unit.shortcut.name)
        convs += [c.name for c in unit.convs]
    norms.append("post")
    return {"conv2d": convs, "batch_normalization": norms, "dense": ["logits"]}
