"""The Inception v3 family in Keras 3: keras.applications' InceptionV3, and a functional builder
for any description, named as keras.applications names its layers in a fresh Keras session.

keras.applications.InceptionV3 leaves its conv2d_bn layers unnamed, so Keras numbers them from a
session-wide counter: the n-th conv (n counted from 0 in network order, `plan.convs`) is
`conv2d_{n}` ("conv2d" for n = 0) with `batch_normalization_{n}` and `activation_{n}` after it;
pools are `max_pooling2d_{n}` / `average_pooling2d_{n}` counted the same way; the blocks are
mixed0..mixed10, the head avg_pool and predictions. A model built later in a session has larger
numbers: the builder renames its layers to the fresh session's (same order, same layers,
`_fresh_names`), so its variables have one name whatever was built before. The auxiliary head
(not in Keras; equiv's generic build of a description that has one) continues the counts and
ends in `aux_predictions`.

Keras stores conv kernels HWIO and dense kernels (in, out): the canonical layouts.
"""

from __future__ import annotations

import re

from equiv.errors import FrameworkError
from equiv.families.base import Dialect, library_build
from equiv.families.inception import plan
from equiv.families.inception.description import Inception
from equiv.families.inception.reference import IMAGENET_MEAN, IMAGENET_STD
from equiv.frameworks.keras import keras

_BASES = {"Conv2D": "conv2d", "BatchNormalization": "batch_normalization", "Activation": "activation",
          "MaxPooling2D": "max_pooling2d", "AveragePooling2D": "average_pooling2d",
          "ZeroPadding2D": "zero_padding2d", "Concatenate": "concatenate"}


def _numbered(base: str, n: int) -> str:
    return base if n == 0 else f"{base}_{n}"


def _suffix(name: str) -> int:
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def _fresh_names(model):
    """`model` cloned with every auto-named layer renamed as a fresh Keras session names it: per
    class, by creation order (the counter's order), from 0."""
    renames: dict[int, str] = {}
    for cls, base in _BASES.items():
        auto = [layer for layer in model.layers if type(layer).__name__ == cls
                and re.fullmatch(rf"{base}(_\d+)?", layer.name)]
        for n, layer in enumerate(sorted(auto, key=lambda layer: _suffix(layer.name))):
            renames[id(layer)] = _numbered(base, n)

    def clone(layer):
        config = layer.get_config()
        if id(layer) in renames:
            config["name"] = renames[id(layer)]
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def _applications(v: Inception):
    """keras.applications.InceptionV3's own body (include_top=False: its include_top=True needs a
    static input size) and the two layers its include_top adds, as it adds them
    (GlobalAveragePooling2D "avg_pool", Dense "predictions"; no softmax: logits)."""
    body = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(None, None, v.in_channels))
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(body.output)
    x = keras.layers.Dense(v.num_classes, activation=None, name="predictions")(x)
    return _fresh_names(keras.Model(body.input, x, name="inception_v3"))


DIALECTS = {
    "keras.applications": Dialect("keras.applications.", build=_applications),
}


def _conv_names(v: Inception) -> dict[str, int]:
    return {c.name: n for n, c in enumerate(plan.convs(v))}


def _pool_names(v: Inception) -> dict[str, str]:
    """Canonical pool -> its Keras name (counted per kind, in network order)."""
    counts = {"max": 0, "avg": 0}
    out = {}
    pools = [p for p in plan.stem(v) if isinstance(p, plan.Pool)]
    for blk in plan.blocks(v):
        pools += [p for br in blk.branches for p in br.layers if isinstance(p, plan.Pool)]
    for p in pools:
        out[p.name] = _numbered("max_pooling2d" if p.kind == "max" else "average_pooling2d", counts[p.kind])
        counts[p.kind] += 1
    return out


def framework_names(variant: Inception) -> dict[str, str]:
    convs = _conv_names(variant)
    names = {}
    for name in plan.param_shapes(variant):
        layer, field = name.rsplit("/", 1)
        if layer == "logits":
            names[name] = f"predictions/{field}"
        elif layer == "aux/logits":
            names[name] = f"aux_predictions/{field}"
        elif layer.endswith("/bn"):
            names[name] = f"{_numbered('batch_normalization', convs[layer[:-3]])}/{field}"
        else:
            names[name] = f"{_numbered('conv2d', convs[layer])}/{field}"
    return names


def build(variant: Inception, *, reference: bool | None = None):
    _, make = library_build(DIALECTS, "keras", variant, reference)
    return make(variant) if make else _generic(variant)


if keras is not None:

    @keras.saving.register_keras_serializable(package="equiv")
    class TransformInput(keras.layers.Layer):
        """torchvision's Inception3 transform_input: x * std / 0.5 + (mean - 0.5) / 0.5 per channel."""

        def call(self, x):
            scale = keras.ops.convert_to_tensor([s / 0.5 for s in IMAGENET_STD], dtype=x.dtype)
            shift = keras.ops.convert_to_tensor([(m - 0.5) / 0.5 for m in IMAGENET_MEAN], dtype=x.dtype)
            return x * scale + shift


def _generic(v: Inception):
    L = keras.layers
    convs, pools = _conv_names(v), _pool_names(v)
    inputs = keras.Input(shape=(*(v.input_size or (None, None)), v.in_channels))
    pads = 0

    def conv(c: plan.Conv, x):
        n = convs[c.name]
        x = L.Conv2D(c.cout, (c.kh, c.kw), strides=c.stride, padding="same" if c.padding == "tf_same" else "valid",
                     use_bias=False, name=_numbered("conv2d", n))(x)
        x = L.BatchNormalization(axis=3, epsilon=v.bn_epsilon, scale=v.bn_scale,
                                 name=_numbered("batch_normalization", n))(x)
        return L.Activation("relu", name=_numbered("activation", n))(x)

    def pool(p: plan.Pool, x):
        nonlocal pads
        padding = "same" if p.padding == "tf_same" else "valid"
        if p.kind == "max":
            return L.MaxPooling2D(p.k, strides=p.stride, padding=padding, name=pools[p.name])(x)
        if padding == "same" and v.pool_count_pad:  # torch's count_include_pad: zeros, then VALID
            x = L.ZeroPadding2D(p.k // 2, name=_numbered("zero_padding2d", pads))(x)
            pads += 1
            padding = "valid"
        return L.AveragePooling2D(p.k, strides=p.stride, padding=padding, name=pools[p.name])(x)

    def layer(op, x):
        return conv(op, x) if isinstance(op, plan.Conv) else pool(op, x)

    x = TransformInput(name="transform_input")(inputs) if v.transform_input else inputs
    for op in plan.stem(v):
        x = layer(op, x)
    aux = None
    for blk in plan.blocks(v):
        parts = []
        for br in blk.branches:
            b = x
            for op in br.layers:
                b = layer(op, b)
            if br.split:
                b = L.Concatenate(axis=3, name=f"{blk.name}_{br.index}")([conv(e, b) for e in br.split])
            parts.append(b)
        x = L.Concatenate(axis=3, name=blk.name)(parts)
        if v.aux_logits and blk.index == v.aux_from:
            a = L.AveragePooling2D(plan.AUX_POOL.k, strides=plan.AUX_POOL.stride, name="aux_pool")(x)
            for c in plan.aux_convs(v):
                a = conv(c, a)
            a = L.GlobalAveragePooling2D(name="aux_avg_pool")(a)
            aux = L.Dense(v.num_classes, name="aux_predictions")(a)
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.Dense(v.num_classes, name="predictions")(x)
    # The auxiliary logits are a second output: a functional model keeps only layers that lead to one.
    return keras.Model(inputs, x if aux is None else [x, aux], name=re.sub(r"\W", "_", v.name))


def tap_outputs(v: Inception, model) -> dict:
    present = {layer.name for layer in model.layers}
    convs, pools = _conv_names(v), _pool_names(v)

    def get(name: str, tap: str):
        if name not in present:
            raise FrameworkError(f"model {model.name} has no layer {name} for tap {tap}")
        return model.get_layer(name).output

    outputs = {}
    for tap in plan.tap_names(v):
        if tap in convs:
            outputs[tap] = get(_numbered("activation", convs[tap]), tap)
        elif tap in pools:
            outputs[tap] = get(pools[tap], tap)
        elif tap == "pool":
            outputs[tap] = get("avg_pool", tap)
        elif tap == "logits":
            outputs[tap] = get("predictions", tap)
        elif tap == "aux/logits":
            outputs[tap] = get("aux_predictions", tap)
        else:
            outputs[tap] = get(tap, tap)  # mixed{i}
    return outputs


def preprocessing(v: Inception) -> str:
    """keras.applications.inception_v3.preprocess_input: "tf" mode (x / 127.5 - 1)."""
    return "keras-tf"
