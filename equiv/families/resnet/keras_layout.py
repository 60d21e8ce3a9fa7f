"""The ResNet family's Keras names and Keras 3 `.weights.h5` layout, without Keras.

The names: keras.applications' scheme (`conv1_conv`, `conv2_block1_0_conv`, `post_bn`,
`predictions`), which equiv's generic Keras model and the seed's use too, and keras-hub's
(`stack0_block0_1_conv`); `equiv.families.resnet.keras` builds with these tables.

The layout: Keras 3 addresses a layer in a `.weights.h5` by its class and its position in the
model's layer list, which a functional model orders by depth in its graph
(`equiv.keras_h5.order`). `graph(v)` is that graph for every model the Keras builder makes of
`v` whose layers it can list: equiv's generic model (keras.applications' models are the same
graph: its layers are transcribed from them) and keras-hub's `ResNetBackbone` and
`ResNetImageClassifier` (transcribed from keras_hub.src.models.resnet); None for the seed's
program, whose model is only Keras'. tests/families/resnet/test_keras_layout.py checks each graph
against the model Keras builds.
"""

from __future__ import annotations

from equiv import canonical as C
from equiv.dialects import spelling
from equiv.errors import FrameworkError
from equiv.families.base import Dialect, dialect, library_build, rename
from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet
from equiv.keras_h5 import Graph
from equiv.variants import Variant

# ---------------------------------------------------------------------------------------
# Names: canonical layer -> Keras layer (s1 is keras.applications' stage number, which counts
# the stem as conv1; s0 and u0 keras-hub's 0-based stacks and blocks)

LAYERS = {
    r"stem/conv": "conv1_conv",
    r"stem/conv/bn": "conv1_bn",
    # a deep stem (no keras.applications model has one): conv1_1_conv, conv1_1_bn, conv1_1_relu, ...
    r"stem/conv(?P<k>\d+)": "conv1_{k}_conv",
    r"stem/conv(?P<k>\d+)/bn": "conv1_{k}_bn",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/preact": "conv{s1}_block{u}_preact_bn",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut": "conv{s1}_block{u}_0_conv",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut/bn": "conv{s1}_block{u}_0_bn",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)": "conv{s1}_block{u}_{k}_conv",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)/bn": "conv{s1}_block{u}_{k}_bn",
    r"post": "post_bn",
    r"logits": "predictions",
}

KERAS_HUB = {
    r"stem/conv": "conv1_conv",
    r"stem/conv/bn": "conv1_bn",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/preact": "stack{s0}_block{u0}_pre_activation_bn",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut": "stack{s0}_block{u0}_0_conv",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut/bn": "stack{s0}_block{u0}_0_bn",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)": "stack{s0}_block{u0}_{k}_conv",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)/bn": "stack{s0}_block{u0}_{k}_bn",
    r"post": "post_bn",
    r"logits": "predictions",
}

# The Keras dialects by name only; equiv.families.resnet.keras adds each library's build to them.
DIALECTS = {
    "keras.applications": Dialect("keras.applications.", LAYERS, changed="refuse", key="keras"),
    "seed": Dialect("equiv.seed.keras_resnet_v2", LAYERS),
    "keras_hub": Dialect("keras_hub.", KERAS_HUB, key="keras-hub"),
}


def hub(v: ResNet) -> bool:
    """`v` is named (and, where keras_hub imports, built) as keras-hub's."""
    return dialect(DIALECTS, v).library == "keras_hub."


def keras_layer(layer: str, v: ResNet | None = None) -> str:
    """Keras layer name of a canonical layer: 'stage1/unit2/conv3/bn' -> 'conv2_block2_3_bn'
    (keras.applications' scheme, which the seed's model uses too; keras-hub's for `v` in its dialect)."""
    return rename(LAYERS if v is None else dialect(DIALECTS, v).names, layer)


def framework_names(variant: ResNet) -> dict[str, str]:
    """Canonical name -> Keras variable path ('conv2_block1_1_conv/kernel'): only the layer is
    renamed; kernel, bias and the BatchNorm fields are Keras' own names."""
    names = {}
    for name in plan.param_shapes(variant):
        layer, field = name.rsplit("/", 1)
        names[name] = f"{keras_layer(layer, variant)}/{field}"
    return names


# ---------------------------------------------------------------------------------------
# The graph of the model equiv.families.resnet.keras.build makes


def _library(v: ResNet) -> str | None:
    """The library prefix whose own build `build(v)` runs (equiv.families.base.library_build with
    reference=None), or None for the generic model. keras-hub's counts wherever the description is
    its own, whether keras_hub imports here or not: its files are what keras-hub loads."""
    hub_lib = DIALECTS["keras_hub"].library
    if v.reference.startswith(hub_lib) and Variant.built_by(v) and v.native == spelling(v, "keras-hub").backend:
        return hub_lib  # without importing keras_hub to see whether it would build it here (v.built_by)
    try:
        own, _ = library_build(DIALECTS, "keras", v, None)
    except FrameworkError:  # Keras refuses to build it (keras.applications' changed descriptions)
        return "refused"
    return next(d.library for d in DIALECTS.values() if v.reference.startswith(d.library)) if own else None


def graph(v: ResNet) -> Graph | None:
    """The Keras model's graph (layers, their classes, inputs and weights), or None where only
    Keras can list it (the seed's program)."""
    library = _library(v)
    if library in ("equiv.seed.keras_resnet_v2", "refused"):
        return None
    if library == "keras_hub.":
        return _keras_hub(v)
    return _generic(v)


def _generic(v: ResNet) -> Graph:
    """equiv.families.resnet.keras._generic, layer for layer (keras.applications' ResNet and
    ResNetV2 build the same graph under the same names)."""
    g = Graph(framework_names(v))
    norm = "GroupNormalization" if v.norm == "group" else "BatchNormalization"
    conv_cls = "StdConv2D" if v.weight_std else "Conv2D"

    def conv(x: str, c: plan.Conv) -> str:
        name = keras_layer(c.name, v)
        base = name.removesuffix("_conv")
        if c.padding != "tf_same" and any(C.pad_amounts(c.padding, 0, c.kernel, c.stride)):
            x = g.add(f"{base}_pad", "ZeroPadding2D", x)
        x = g.add(name, conv_cls, x)
        if c.norm:
            x = g.add(keras_layer(f"{c.name}/bn", v), norm, x)
        if c.relu:
            x = g.add(f"{base}_relu", "Activation", x)
        return x

    preact = "pre_activation" if hub(v) else "preact"
    x = g.add("input_layer", "InputLayer")
    for c in plan.stem_convs(v):
        x = conv(x, c)
    if v.pool_padding != "tf_same" and any(C.pad_amounts(v.pool_padding, 0, v.pool_kernel, v.pool_stride)):
        x = g.add("pool1_pad", "NegInfPadding2D" if v.pool_pad_value == "-inf" else "ZeroPadding2D", x)
    x = g.add("pool1_pool", "MaxPooling2D", x)
    for unit in plan.units(v):
        p = _unit_prefix(unit, v)
        branch = identity = x
        if v.preact:
            branch = g.add(f"{p}_{preact}_bn", norm, x)
            if v.preact_relu:
                branch = g.add(f"{p}_{preact}_relu", "Activation", branch)
            if v.identity_from == "preact":
                identity = branch
        if unit.shortcut:
            into = branch if v.preact else x
            if unit.avg_down:
                into = g.add(f"{p}_0_avgpool", "AveragePooling2D", into)
            shortcut = conv(into, unit.shortcut)
        elif unit.stride > 1:
            shortcut = g.add(f"{p}_0_pool", "MaxPooling2D", identity)
        else:
            shortcut = identity
        for c in unit.convs:
            branch = conv(branch, c)
        if v.preact:
            x = g.add(f"{p}_out", "Add", shortcut, branch)
        else:
            x = g.add(f"{p}_out", "Activation", g.add(f"{p}_add", "Add", shortcut, branch))
    if v.preact:
        x = g.add("post_relu", "Activation", g.add("post_bn", norm, x))
    if not plan.has_pool(v):
        return g
    if v.head_pool:
        x = g.add("avg_pool", "Flatten", g.add("avg_pool_pool", "AveragePooling2D", x))
    else:
        x = g.add("pooler" if hub(v) else "avg_pool", "GlobalAveragePooling2D", x)
    if not plan.has_classifier(v):
        return g
    x = g.add("predictions", "Conv1x1Head" if v.head == "conv" else "Dense", x)
    if v.head_activation == "softmax":
        g.add("probs", "Activation", x)
    return g


def _unit_prefix(unit: plan.Unit, v: ResNet) -> str:
    if hub(v):
        return f"stack{unit.stage - 1}_block{unit.index - 1}"
    return f"conv{unit.stage + 1}_block{unit.index}"


def _keras_hub(v: ResNet) -> Graph:
    """keras_hub's ResNetBackbone (`resnet_backbone.py`: one stem conv, `apply_stack` of
    bottleneck blocks, the first of each stack projecting its shortcut) as equiv.families.resnet.keras
    configures it; inside ResNetImageClassifier (input, backbone, pooler, dropout, predictions) unless
    the description is headless."""
    names = framework_names(v)
    b = Graph(names)
    x = b.add("input_layer", "InputLayer")
    x = b.add("conv1_pad", "ZeroPadding2D", x)
    x = b.add("conv1_conv", "Conv2D", x)
    if not v.preact:
        x = b.add("conv1_relu", "Activation", b.add("conv1_bn", "BatchNormalization", x))
        x = b.add("pool1_pad", "ZeroPadding2D", x)
    else:
        x = b.add("pad", None, x)  # keras.ops.pad: an operation of the graph, not a layer
    x = b.add("pool1_pool", "MaxPooling2D", x)
    for unit in plan.units(v):
        p = _unit_prefix(unit, v)
        preact = None
        if v.preact:
            preact = b.add(f"{p}_pre_activation_relu", "Activation",
                           b.add(f"{p}_pre_activation_bn", "BatchNormalization", x))
        if unit.shortcut:
            shortcut = b.add(f"{p}_0_conv", "Conv2D", preact or x)
            if not v.preact:
                shortcut = b.add(f"{p}_0_bn", "BatchNormalization", shortcut)
        else:
            shortcut = x
        y = preact or x
        y = b.add(f"{p}_1_bn", "BatchNormalization", b.add(f"{p}_1_conv", "Conv2D", y))
        y = b.add(f"{p}_1_relu", "Activation", y)
        if unit.stride > 1:
            y = b.add(f"{p}_2_pad", "ZeroPadding2D", y)
        y = b.add(f"{p}_2_bn", "BatchNormalization", b.add(f"{p}_2_conv", "Conv2D", y))
        y = b.add(f"{p}_2_relu", "Activation", y)
        y = b.add(f"{p}_3_conv", "Conv2D", y)
        if not v.preact:
            y = b.add(f"{p}_3_bn", "BatchNormalization", y)
            x = b.add(f"{p}_out", "Activation", b.add(f"{p}_add", "Add", shortcut, y))
        else:
            x = b.add(f"{p}_out", "Add", shortcut, y)
    if v.preact:
        x = b.add("post_relu", "Activation", b.add("post_bn", "BatchNormalization", x))
    if v.head == "none":  # the backbone alone (equiv.families.resnet.keras._keras_hub)
        return b
    g = Graph(names)
    x = g.add("input_layer", "InputLayer")
    x = g.add("res_net_backbone", "ResNetBackbone", x, nested=b)
    x = g.add("output_dropout", "Dropout", g.add("pooler", "GlobalAveragePooling2D", x))
    g.add("predictions", "Dense", x)
    return g
