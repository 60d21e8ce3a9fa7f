"""The VGG family in TF-slim: tf_slim.nets.vgg's vgg_16/vgg_19 as they are, and every other
description built from slim layers under the same naming scheme.

Names follow tf_slim.nets.vgg, so its checkpoints read unchanged:

    stage{s}/conv{k}   <scope>/conv{s}/conv{s}_{k}   (weights, biases; a BatchNorm in .../BatchNorm)
    fc6, fc7, ...      <scope>/fc6, <scope>/fc7
    logits             <scope>/fc{6 + number of hidden dense layers}  (fc8)

Layout: the classifier is convolutional, as slim's is. fc6 is an h x w VALID conv over the
flattened map (h, w, c), its kernel (h, w, c, out) the canonical (h*w*c, out) reshaped (the NHWC
flatten order is the row-major order of a conv kernel's first three axes); every later dense
layer is a 1x1 conv, its kernel (1, 1, in, out).
"""

from __future__ import annotations

import re
from typing import Any

from equiv.families.base import Dialect, library_build
from equiv.families.vgg import plan
from equiv.families.vgg.description import VGG as Description
from equiv.frameworks.slim import _libs

DIALECTS = {
    "tf_slim.nets": Dialect("tf_slim.nets.", build=lambda v, x: _build_reference(v, x)),
}


def scope(v: Description) -> str:
    """tf_slim.nets' default scope is the function's name (vgg_16): the variant's short name."""
    return re.sub(r"[^0-9A-Za-z_.]", "_", v.short_name)


def _layer(v: Description, layer: str) -> str:
    m = re.fullmatch(r"stage(\d+)/conv(\d+)", layer)
    if m:
        s, k = m.groups()
        return f"{scope(v)}/conv{s}/conv{s}_{k}"
    if layer == "logits":
        return f"{scope(v)}/fc{6 + len(v.fc_widths)}"
    return f"{scope(v)}/{layer}"


_FIELDS = {"kernel": "weights", "bias": "biases"}


def framework_names(variant: Description) -> dict[str, str]:
    out = {}
    for name in plan.param_shapes(variant):
        layer, fld = name.rsplit("/", 1)
        if layer.endswith("/bn"):
            layer, fld = layer[: -len("/bn")], f"BatchNorm/{fld}"
        out[name] = f"{_layer(variant, layer)}/{_FIELDS.get(fld, fld)}"
    return out


def _dense_kernels(v: Description) -> dict[str, tuple[int, int]]:
    """The spatial size of each dense layer's kernel as slim's conv: (h, w) of the flattened map
    for the first, (1, 1) after."""
    h, w, _ = plan.flatten_map(v)
    names = [name for name, _, _ in plan.dense_layers(v)]
    return {f"{n}/kernel": (h, w) if i == 0 else (1, 1) for i, n in enumerate(names)}


def slim_shape(v: Description, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape slim stores canonical parameter `name` of `shape` in (a conv classifier)."""
    k = _dense_kernels(v).get(name)
    if k is None or len(shape) != 2:
        return shape
    h, w = k
    return (h, w, shape[0] // (h * w), shape[1])


def canonical_shape(v: Description, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if name in _dense_kernels(v) and len(shape) == 4:
        return (shape[0] * shape[1] * shape[2], shape[3])
    return shape


# ---------------------------------------------------------------------------------------
# Building


def build(variant: Description, x, *, reference: bool | None = None) -> tuple[dict[str, Any], bool]:
    tf, _ = _libs()
    reference, make = library_build(DIALECTS, "slim", variant, reference)
    taps = (make or _build_generic)(variant, x)
    for name, _, out in plan.dense_layers(variant):
        taps[name] = tf.reshape(taps[name], [-1, out])
    taps["flatten"] = tf.reshape(taps["flatten"], [-1, plan.features(variant)])  # NHWC order
    return taps, reference


def _conv_taps(v: Description, top: str, get) -> dict[str, Any]:
    taps = {}
    for s, n in enumerate(v.convs, start=1):
        for k in range(1, n + 1):
            taps[f"stage{s}/conv{k}"] = get(f"{top}/conv{s}/conv{s}_{k}")
        taps[f"stage{s}/pool"] = get(f"{top}/pool{s}")
    return taps


def _build_reference(v: Description, x) -> dict[str, Any]:
    """tf_slim.nets.vgg's own function (is_training=False: no dropout), its end points as taps."""
    _, slim = _libs()
    from tf_slim.nets import vgg

    function = getattr(vgg, v.reference.rsplit(".", 1)[1])
    with slim.arg_scope(vgg.vgg_arg_scope()):
        _, end_points = function(x, num_classes=v.num_classes, is_training=False, spatial_squeeze=True)
    top = scope(v)
    taps = _conv_taps(v, top, end_points.__getitem__)
    taps["flatten"] = taps[f"stage{len(v.convs)}/pool"]
    taps["fc6"], taps["fc7"] = end_points[f"{top}/fc6"], end_points[f"{top}/fc7"]
    taps["logits"] = end_points[f"{top}/fc8"]
    return taps


def adaptive_avg_pool(tf, h, size: tuple[int, int]):
    """PyTorch's AdaptiveAvgPool2d on NHWC `h` of any (dynamic) size: each output cell the mean
    of its bin [floor(i n / out), ceil((i + 1) n / out)) on each axis."""
    shape = tf.shape(h)

    def bins(n, out):
        return [((i * n) // out, ((i + 1) * n + out - 1) // out) for i in range(out)]

    rows = []
    for a, b in bins(shape[1], size[0]):
        rows.append(tf.stack([tf.reduce_mean(h[:, a:b, c:d, :], axis=[1, 2])
                              for c, d in bins(shape[2], size[1])], axis=1))
    return tf.stack(rows, axis=1)


def _build_generic(v: Description, x) -> dict[str, Any]:
    """The description in slim layers, named as tf_slim.nets.vgg names them."""
    tf, slim = _libs()
    taps: dict[str, Any] = {}
    with tf.compat.v1.variable_scope(scope(v)):
        h = x
        for c in plan.convs(v):
            name = f"conv{c.stage}/conv{c.stage}_{c.index}"
            h = slim.conv2d(h, c.cout, 3, padding="SAME", normalizer_fn=None,
                            activation_fn=None if v.batch_norm else tf.nn.relu,
                            biases_initializer=tf.zeros_initializer() if v.conv_bias else None, scope=name)
            if v.batch_norm:
                h = slim.batch_norm(h, center=True, scale=True, epsilon=v.bn_epsilon, is_training=False,
                                    activation_fn=tf.nn.relu, scope=f"{name}/BatchNorm")
            taps[c.name] = h
            if c.index == v.convs[c.stage - 1]:
                h = taps[f"stage{c.stage}/pool"] = slim.max_pool2d(h, 2, stride=2, padding="VALID",
                                                                   scope=f"pool{c.stage}")
        if v.adaptive_pool is not None:
            h = adaptive_avg_pool(tf, h, v.adaptive_pool)
        taps["flatten"] = h
        kh, kw, _ = plan.flatten_map(v)
        for i, (name, _, out) in enumerate(plan.dense_layers(v)):
            last = name == "logits"
            h = taps[name] = slim.conv2d(h, out, [kh, kw] if i == 0 else 1, padding="VALID",
                                         activation_fn=None if last else tf.nn.relu, normalizer_fn=None,
                                         scope=_layer(v, name).rsplit("/", 1)[1])
    return taps


def preprocessing(v: Description) -> str:
    """The input tf_slim's VGGs were trained on (a name of equiv.preprocessing.RECORDS)."""
    return "slim-vgg"
