"""The ResNet family in Keras 3: keras.applications' models, the seed's, and a functional
builder for any description.

Every model, the reference and the generic one alike, uses keras.applications' layer names
(`conv1_conv`, `conv2_block1_0_conv`, `conv3_block2_preact_bn`, `post_bn`, `predictions`): that
dialect is the table `_LAYERS` (`DIALECTS`; kept without Keras in keras_layout, with the `.weights.h5`
layout), so one renaming serves both, and taps are found by layer name.
Keras stores kernels HWIO and dense kernels (in, out), as the canonical form does.
"""

from __future__ import annotations

import re
from dataclasses import replace

from equiv.errors import FrameworkError
from equiv.families.base import dialect, library_build
from equiv.families.resnet import keras_layout, plan
from equiv.families.resnet.description import ResNet
from equiv.frameworks.keras import NegInfPadding2D, keras, padding_layers

# ---------------------------------------------------------------------------------------
# Names: keras.applications' scheme (`_LAYERS`) and keras-hub's (`_KERAS_HUB`), kept without Keras
# beside the layout of their `.weights.h5` files (equiv.families.resnet.keras_layout)

_LAYERS, _KERAS_HUB = keras_layout.LAYERS, keras_layout.KERAS_HUB


def _applications(v: ResNet):
    """keras.applications' own model. It insists on a static 224x224 input_shape with the top;
    an input tensor of free size is taken as it is, and the layer names stay the same."""
    function = getattr(keras.applications, v.reference.rsplit(".", 1)[1])
    return function(weights=None, include_top=True, classes=v.num_classes, classifier_activation=None,
                    input_tensor=keras.Input(shape=(None, None, v.in_channels)))


def _seed(v: ResNet):
    from equiv.seed import keras_resnet_v2

    return keras_resnet_v2.build(v)


# keras.applications refuses (by name) a description changed from its own rather than build it
# generically; the seed's model names its layers as keras.applications does (Keras 2 files of
# it name them by class and counter: keras2_layer_names).
DIALECTS = {
    "keras.applications": replace(keras_layout.DIALECTS["keras.applications"], build=_applications),
    "seed": replace(keras_layout.DIALECTS["seed"], build=_seed),
}


# Issue 16 B: keras-hub's names (keras_layout.KERAS_HUB); the generic builder names a keras-hub description's
# layers so too, so one renaming serves both.


def _keras_hub(v: ResNet):
    """keras-hub's ResNetImageClassifier on its ResNetBackbone (the backbone alone for head "none"),
    as its presets configure them (a 7x7 stem of 64, bottleneck blocks); equiv's generic model,
    named alike, where keras_hub does not import."""
    try:
        import keras_hub
    except ImportError:
        return _generic(v)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[v.stem_width], input_conv_kernel_sizes=[v.stem_kernel],
        stackwise_num_filters=list(v.widths), stackwise_num_blocks=list(v.depths),
        stackwise_num_strides=list(v.strides), block_type="bottleneck_block",
        use_pre_activation=v.preact, image_shape=(*(v.input_size or (None, None)), v.in_channels))
    if v.head == "none":  # the backbone alone: what ResNetBackbone.save_weights writes and load_weights reads
        return backbone
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=v.num_classes, activation=None)


DIALECTS["keras_hub"] = replace(keras_layout.DIALECTS["keras_hub"], build=_keras_hub)
_hub = keras_layout.hub
keras_layer = keras_layout.keras_layer
framework_names = keras_layout.framework_names


def _preact(v: ResNet) -> str:
    return "pre_activation" if _hub(v) else "preact"


def _pool_name(v: ResNet) -> str:
    return "pooler" if _hub(v) else "avg_pool"


def _layers(model) -> dict:
    """Layer name -> layer of `model` and of the functional models nested in it (keras-hub's
    classifier holds its backbone as one layer)."""
    out = {}
    for layer in model.layers:
        if getattr(layer, "layers", None):  # a nested model
            out.update(_layers(layer))
        out[layer.name] = layer
    return out


_AUTO_NAME = re.compile(r"(conv2d|batch_normalization|dense)(?:_(\d+))?")


def keras2_layer_names(variant: ResNet, layer_names) -> dict[str, str]:
    """File layer name -> this adapter's layer name, for a Keras 2 `.h5` file.

    keras.applications names every layer, so its files need nothing. The seed's model names
    none: Keras 2 called them by class and a per-session counter (`conv2d_7`), so within each
    class the counter gives the order in which the seed's code created them, which
    `equiv.seed.keras_resnet_v2.keras2_layer_order` lists. A class whose count does not fit is
    left unmapped, for the strict check to report by the file's own names."""
    if dialect(DIALECTS, variant) is not DIALECTS["seed"]:
        return {}
    from equiv.seed import keras_resnet_v2

    found: dict[str, list[tuple[int, str]]] = {}
    for name in layer_names:
        m = _AUTO_NAME.fullmatch(name)
        if m:
            found.setdefault(m.group(1), []).append((int(m.group(2) or 0), name))
    out = {}
    for cls, layers in keras_resnet_v2.keras2_layer_order(variant).items():
        names = sorted(found.get(cls, []))
        if len(names) == len(layers):
            out.update({name: keras_layer(layer) for (_, name), layer in zip(names, layers)})
    return out


def _unit_prefix(unit: plan.Unit, v: ResNet | None = None) -> str:
    if v is not None and _hub(v):
        return f"stack{unit.stage - 1}_block{unit.index - 1}"
    return f"conv{unit.stage + 1}_block{unit.index}"


def _conv_outputs(c: plan.Conv, v: ResNet | None = None) -> tuple[str, ...]:
    """The Keras layers that may end a conv, last first: its ReLU, its BatchNorm, the conv
    itself (which holds the ReLU where the activation is fused, as in the seed's model)."""
    base = keras_layer(c.name, v).removesuffix("_conv")
    return (base + "_relu",) * c.relu + (base + "_bn",) * c.norm + (base + "_conv",)


def _tap_layers(v: ResNet) -> dict[str, tuple[str, ...]]:
    """Canonical tap -> the Keras layers whose output it may be, the first found in a model
    wins. The shortcut is special-cased in `_tap_model`: the input of the unit's add that is
    not the branch (a projection, a 1x1 max-pool, or the unit's input itself)."""
    taps = {c.name: _conv_outputs(c, v) for c in plan.stem_convs(v)}
    taps["stem/pool"] = ("pool1_pool",)
    for unit in plan.units(v):
        p = _unit_prefix(unit, v)
        if v.preact:
            taps[f"{unit.name}/preact"] = (f"{p}_{_preact(v)}_relu", f"{p}_{_preact(v)}_bn")
        for c in unit.convs:
            taps[c.name] = _conv_outputs(c, v)
        taps[unit.name] = (f"{p}_out",)
    if v.preact:
        taps["post"] = ("post_relu",)
    if plan.has_pool(v):
        taps["pool"] = (_pool_name(v),)
    if plan.has_classifier(v):
        taps[plan.output_tap(v)] = ("probs", "predictions")
    return taps


# ---------------------------------------------------------------------------------------
# Building


def build(variant: ResNet, *, reference: bool | None = None):
    """The reference library's model where its code computes `variant` (keras.applications, the
    seed's program), else the generic functional model.

    They take any input size and batch (a (None, None, C) input), except where a flattened
    head fixes the size, and output logits (probabilities after a softmax head).
    """
    _, make = library_build(DIALECTS, "keras", variant, reference)
    return make(variant) if make else _generic(variant)


def _conv(v: ResNet, x, c: plan.Conv):
    name = keras_layer(c.name, v)
    base = name.removesuffix("_conv")
    x, padding = padding_layers(c.padding, c.kernel, c.stride, x, f"{base}_pad")
    conv = StdConv2D if v.weight_std else keras.layers.Conv2D
    extra = {"ws_epsilon": v.ws_epsilon} if v.weight_std else {}
    x = conv(c.cout, c.kernel, strides=c.stride, padding=padding, use_bias=c.bias, groups=c.groups,
             name=name, **extra)(x)
    if c.norm:
        x = _norm(v, keras_layer(f"{c.name}/bn", v))(x)
    if c.relu:
        x = keras.layers.Activation("relu", name=f"{base}_relu")(x)
    return x


def _unit(v: ResNet, x, unit: plan.Unit):
    p = _unit_prefix(unit, v)
    branch = identity = x
    if v.preact:
        branch = _norm(v, f"{p}_{_preact(v)}_bn")(x)
        if v.preact_relu:
            branch = keras.layers.Activation("relu", name=f"{p}_{_preact(v)}_relu")(branch)
        if v.identity_from == "preact":
            identity = branch
    if unit.shortcut:
        into = branch if v.preact else x  # v2 projects the pre-activation
        if unit.avg_down:  # ResNet-D: TF's SAME average pool counts no padding (reference.avg_down)
            into = keras.layers.AveragePooling2D(2, strides=unit.stride, padding="same", name=f"{p}_0_avgpool")(into)
        shortcut = _conv(v, into, unit.shortcut)
    elif unit.stride > 1:
        shortcut = keras.layers.MaxPooling2D(1, strides=unit.stride, name=f"{p}_0_pool")(identity)
    else:
        shortcut = identity
    for c in unit.convs:
        branch = _conv(v, branch, c)
    if v.preact:  # no ReLU after a v2 add; keras.applications names the add itself _out
        return keras.layers.Add(name=f"{p}_out")([shortcut, branch])
    x = keras.layers.Add(name=f"{p}_add")([shortcut, branch])
    return keras.layers.Activation("relu", name=f"{p}_out")(x)


def _generic(v: ResNet):
    inputs = keras.Input(shape=(*(v.input_size or (None, None)), v.in_channels))
    x = inputs
    for c in plan.stem_convs(v):
        x = _conv(v, x, c)
    pad_layer = NegInfPadding2D if v.pool_pad_value == "-inf" else keras.layers.ZeroPadding2D
    x, padding = padding_layers(v.pool_padding, v.pool_kernel, v.pool_stride, x, "pool1_pad", pad_layer)
    x = keras.layers.MaxPooling2D(v.pool_kernel, strides=v.pool_stride, padding=padding,
                                  name="pool1_pool")(x)
    for unit in plan.units(v):
        x = _unit(v, x, unit)
    if v.preact:
        x = _norm(v, "post_bn")(x)
        x = keras.layers.Activation("relu", name="post_relu")(x)
    if not plan.has_pool(v):  # a backbone
        return keras.Model(inputs, x, name=re.sub(r"\W", "_", v.name))
    if v.head_pool:  # average pool, then flatten in NHWC order (the canonical kernel's rows)
        x = keras.layers.AveragePooling2D(v.head_pool, strides=v.head_pool_stride, name="avg_pool_pool")(x)
        x = keras.layers.Flatten(name="avg_pool")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name=_pool_name(v))(x)
    if not plan.has_classifier(v):
        return keras.Model(inputs, x, name=re.sub(r"\W", "_", v.name))
    x = (Conv1x1Head if v.head == "conv" else keras.layers.Dense)(v.num_classes, name="predictions")(x)
    if v.head_activation == "softmax":
        x = keras.layers.Activation("softmax", name="probs")(x)
    return keras.Model(inputs, x, name=re.sub(r"\W", "_", v.name))


def tap_outputs(v: ResNet, model) -> dict:
    """Canonical tap -> the Keras tensor of `model` that holds it."""
    present = _layers(model)
    outputs = {}
    for tap, candidates in _tap_layers(v).items():
        found = [name for name in candidates if name in present]
        if not found:
            raise FrameworkError(f"model {model.name} has none of the layers {candidates} for tap {tap}")
        outputs[tap] = present[found[0]].output
    for unit in plan.units(v):  # the add's input that is not the branch
        add = present[f"{_unit_prefix(unit, v)}_out" if v.preact else f"{_unit_prefix(unit, v)}_add"]
        branch = outputs[unit.convs[-1].name]
        outputs[f"{unit.name}/shortcut"] = next(t for t in add.input if t is not branch)
    return outputs


def preprocessing(v: ResNet) -> str:
    """The input this library feeds a ResNet like `v` by habit (a name of equiv.preprocessing.RECORDS)."""
    return "keras-tf" if v.preact else "keras-caffe"


# ---------------------------------------------------------------------------------------
# Issue 16 B: normalisation, weight standardisation and heads


def _norm(v: ResNet, name: str):
    """A BatchNormalization, or a GroupNormalization of v.norm_groups groups (gamma and beta only)."""
    if v.norm == "group":
        return keras.layers.GroupNormalization(v.norm_groups, epsilon=v.bn_epsilon, scale=v.bn_scale, name=name)
    return keras.layers.BatchNormalization(epsilon=v.bn_epsilon, scale=v.bn_scale, name=name)


if keras is not None:

    @keras.saving.register_keras_serializable(package="equiv")
    class StdConv2D(keras.layers.Conv2D):
        """A weight-standardised Conv2D: its stored kernel is the raw one, standardised per output
        channel ((k - mean) / sqrt(var + ws_epsilon), biased variance) at each call."""

        def __init__(self, *args, ws_epsilon: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.ws_epsilon = float(ws_epsilon)

        def convolution_op(self, inputs, kernel):
            mean = keras.ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
            var = keras.ops.mean(keras.ops.square(kernel - mean), axis=(0, 1, 2), keepdims=True)
            return super().convolution_op(inputs, (kernel - mean) / keras.ops.sqrt(var + self.ws_epsilon))

        def get_config(self):
            return {**super().get_config(), "ws_epsilon": self.ws_epsilon}

    @keras.saving.register_keras_serializable(package="equiv")
    class Conv1x1Head(keras.layers.Dense):
        """A classifier computed as a 1x1 convolution of the pooled 1x1 map (timm's resnetv2 head),
        its kernel kept (features, classes) as a Dense keeps it (the canonical layout)."""

        def call(self, x):
            k = keras.ops.reshape(self.kernel, (1, 1, *self.kernel.shape))
            y = keras.ops.conv(keras.ops.expand_dims(keras.ops.expand_dims(x, 1), 1), k)
            y = keras.ops.reshape(y, (-1, self.units))
            return y + self.bias if self.use_bias else y
else:  # pragma: no cover - the adapter says keras is missing before any build
    StdConv2D = Conv1x1Head = None
