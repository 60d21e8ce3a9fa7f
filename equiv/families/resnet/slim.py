"""The ResNet family in TF-slim: the `tf_slim.nets` ResNets as they are, the seed's program,
and every other description built from slim layers under the same naming scheme.

Names follow `tf_slim.nets` exactly, so official slim checkpoints read unchanged:

    stem/conv                 <scope>/conv1
    stage{s}/unit{u}          <scope>/block{s}/unit_{u}/<bottleneck|basic>_<v1|v2>
    stage{s}/unit{u}/conv{k}  <unit>/conv{k}   (and <unit>/shortcut, <unit>/preact)
    post                      <scope>/postnorm
    logits                    <scope>/logits   (a 1x1 conv: its kernel is (1, 1, features, classes))

and inside a layer: kernel -> weights, bias -> biases, bn/<field> -> BatchNorm/<field>
(preact and postnorm are bare BatchNorms: their fields sit directly under the layer). The seed's
program uses other scope names: the dialect tables `_SCOPES` and `DIALECTS`.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np

from equiv import canonical as C
from equiv.families.base import Dialect, dialect, library_build, rename
from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet as Description
from equiv.frameworks.slim import _libs

# ---------------------------------------------------------------------------------------
# Names


# canonical layer -> slim scope, in tf_slim.nets' scheme; {scope}, {unit} and {preact} are the
# dialect's (tf_slim.nets: the variant's short name, <block>_<v1|v2>, preact)
_SCOPES = {
    r"stem/conv": "{scope}/conv1",
    r"stem/conv(?P<k>\d+)": "{scope}/conv1_{k}",  # a deep stem (tf_slim.nets has none)
    r"post": "{scope}/postnorm",
    r"logits": "{scope}/logits",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)": "{scope}/block{s}/unit_{u}/{unit}",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/preact": "{scope}/block{s}/unit_{u}/{unit}/{preact}",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/(?P<layer>conv\d+|shortcut)": "{scope}/block{s}/unit_{u}/{unit}/{layer}",
}


def _seed_taps(v: Description, x) -> dict[str, Any]:
    from equiv.seed import slim_resnet_v2

    return slim_resnet_v2.build_taps(v, x)


# The seed's program calls its resnet_v2_50 `resnet_v2_6`, its units `residual_v2`, their
# pre-activation `preactivate`.
DIALECTS = {
    "tf_slim.nets": Dialect("tf_slim.nets.", {"preact": "preact"}, build=lambda v, x: _build_reference(v, x),
                            key="slim"),
    "seed": Dialect("equiv.seed.slim_resnet_v2", {"scope": "resnet_v2_6", "unit": "residual_v2",
                                                  "preact": "preactivate"}, build=_seed_taps),
}


def scope(v: Description) -> str:
    """The outer scope: tf_slim.nets' default is the function's name (resnet_v2_50, ...), which
    is the variant's short name."""
    return dialect(DIALECTS, v).names.get("scope") or re.sub(r"[^0-9A-Za-z_.]", "_", v.short_name)


def _fill(v: Description) -> dict[str, str]:
    """The dialect's {scope}, {unit} and {preact} for `v`."""
    names = dialect(DIALECTS, v).names
    return {"scope": scope(v), "unit": names.get("unit") or f"{v.block}_{'v2' if v.preact else 'v1'}",
            "preact": names["preact"]}


def _layer(v: Description, layer: str) -> str:
    """Canonical layer (or unit) name -> slim scope."""
    return rename(_SCOPES, layer, **_fill(v))


_FIELDS = {"kernel": "weights", "bias": "biases"}  # BatchNorm fields keep their names


def framework_names(variant: Description) -> dict[str, str]:
    out = {}
    for name in plan.param_shapes(variant):
        layer, fld = name.rsplit("/", 1)
        if layer.endswith("/bn"):  # a conv's BatchNorm lives in the conv's scope
            layer, fld = layer[: -len("/bn")], f"{norm_scope(variant)}/{fld}"
        out[name] = f"{_layer(variant, layer)}/{_FIELDS.get(fld, fld)}"
    return out


# The one layout difference from the canonical form: slim's logits are a 1x1 conv (after a
# global mean; a flattened head is a fully_connected layer, whose kernel is canonical).
def slim_shape(v: Description, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape slim stores canonical parameter `name` of `shape` in."""
    return (1, 1, *shape) if name == "logits/kernel" and not v.head_pool else shape


def canonical_shape(v: Description, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The canonical shape of a slim variable (any other shape is left as it is, for the strict
    check to report)."""
    if name == "logits/kernel" and not v.head_pool and tuple(shape[:2]) == (1, 1):
        return tuple(shape[2:])
    return shape


# ---------------------------------------------------------------------------------------
# Building


def build(variant: Description, x, *, reference: bool | None = None) -> tuple[dict[str, Any], bool]:
    """Build `variant` on input placeholder `x` in the current graph: (canonical tap -> tensor,
    whether library code built it)."""
    tf, _ = _libs()
    reference, make = library_build(DIALECTS, "slim", variant, reference)
    taps = (make or _build_generic)(variant, x)
    if plan.has_pool(variant):
        taps["pool"] = tf.reshape(taps["pool"], [-1, plan.features(variant)])
    if plan.has_classifier(variant):
        out = plan.output_tap(variant)
        taps[out] = tf.reshape(taps[out], [-1, variant.num_classes])
    return taps, reference


def _build_reference(v: Description, x) -> dict[str, Any]:
    """Build the tf_slim.nets function itself, then find each tap in its graph."""
    tf, slim = _libs()
    from tf_slim.nets import resnet_v1, resnet_v2

    module, function = v.reference.rsplit(".", 1)  # tf_slim.nets.resnet_v2.resnet_v2_50
    nets = {"tf_slim.nets.resnet_v1": resnet_v1, "tf_slim.nets.resnet_v2": resnet_v2}[module]
    with slim.arg_scope(nets.resnet_arg_scope()):
        _, end_points = getattr(nets, function)(x, num_classes=v.num_classes, is_training=False)
    g = tf.compat.v1.get_default_graph()
    top = scope(v)
    taps = {"stem/conv": end_points[f"{top}/conv1"],
            "stem/pool": g.get_tensor_by_name(f"{top}/pool1/MaxPool:0")}
    for unit in plan.units(v):
        name = _layer(v, unit.name)
        if v.preact:
            taps[f"{unit.name}/preact"] = g.get_tensor_by_name(f"{name}/preact/Relu:0")
        # The unit's add is shortcut + residual, in that order, whatever the shortcut is.
        taps[f"{unit.name}/shortcut"] = g.get_operation_by_name(f"{name}/add").inputs[0]
        for c in unit.convs:
            taps[c.name] = end_points[_layer(v, c.name)]
        taps[unit.name] = end_points[name]
    if v.preact:
        taps["post"] = g.get_tensor_by_name(f"{top}/postnorm/Relu:0")
    taps["pool"] = g.get_tensor_by_name(f"{top}/pool5:0")
    taps["logits"] = end_points[f"{top}/logits"]
    return taps


def _build_generic(v: Description, x) -> dict[str, Any]:
    """Realise the description with slim layers, in tf_slim.nets' scoping and naming."""
    tf, slim = _libs()
    relu = tf.nn.relu

    def batch_norm(h, scope, activation_fn):
        if v.norm == "group":
            return group_norm(v, h, scope.replace("BatchNorm", "GroupNorm"), activation_fn)
        return slim.batch_norm(h, center=True, scale=v.bn_scale, epsilon=v.bn_epsilon,
                               is_training=False, activation_fn=activation_fn, scope=scope)

    def pad(h, before, after, value=0.0):
        if before == after == 0:
            return h
        return tf.pad(h, [[0, 0], [before, after], [before, after], [0, 0]], constant_values=value)

    def conv(c: plan.Conv, h, scope):
        # With stride 1 both rules pad (k-1)//2 before and the rest after, which is SAME
        # (what slim's conv2d_same uses there); only strided convs need the rule.
        if c.stride > 1 and c.padding == "symmetric":
            h, padding = pad(h, *C.pad_amounts("symmetric", 0, c.kernel, c.stride)), "VALID"
        else:
            padding = "SAME"
        act = relu if c.relu else None
        if v.weight_std:
            h = std_conv2d(v, c, h, padding, scope)
            h = act(h) if act is not None and not c.norm else h
        elif c.groups > 1:
            h = grouped_conv(h, c, padding, scope, None if c.norm else act)
        else:
            h = slim.conv2d(h, c.cout, c.kernel, stride=c.stride, padding=padding,
                            activation_fn=None if c.norm else act, normalizer_fn=None,
                            biases_initializer=tf.zeros_initializer() if c.bias else None, scope=scope)
        return batch_norm(h, f"{scope}/BatchNorm", act) if c.norm else h

    def grouped_conv(h, c: plan.Conv, padding, scope, act):
        """slim.conv2d has no groups: the same variables (weights (k, k, in / groups, out), biases)
        in the same scope, and TensorFlow's own grouped tf.nn.conv2d, which runs on the CPU (TF 2.21)."""
        with tf.compat.v1.variable_scope(scope):
            w = tf.compat.v1.get_variable("weights", (c.kernel, c.kernel, c.cin // c.groups, c.cout), tf.float32)
            h = tf.nn.conv2d(h, w, strides=c.stride, padding=padding)
            if c.bias:
                h = tf.nn.bias_add(h, tf.compat.v1.get_variable("biases", (c.cout,), tf.float32,
                                                                tf.zeros_initializer()))
        return act(h) if act else h

    def max_pool(h):
        k, s = v.pool_kernel, v.pool_stride
        if v.pool_padding == "symmetric":
            value = -np.inf if v.pool_pad_value == "-inf" else 0.0
            h = pad(h, *C.pad_amounts("symmetric", 0, k, s), value=value)
        padding = "SAME" if v.pool_padding == "tf_same" else "VALID"  # SAME pads with -inf
        return slim.max_pool2d(h, k, stride=s, padding=padding, scope="pool1")

    taps = {}
    with tf.compat.v1.variable_scope(scope(v)):
        h = x
        for c in plan.stem_convs(v):  # conv1, or a deep stem's conv1_1 .. conv1_n
            h = taps[c.name] = conv(c, h, _layer(v, c.name).rsplit("/", 1)[1])
        h = taps["stem/pool"] = max_pool(h)
        for s, stage in itertools.groupby(plan.units(v), key=lambda unit: unit.stage):
            with tf.compat.v1.variable_scope(f"block{s}"):
                for unit in stage:
                    with tf.compat.v1.variable_scope(f"unit_{unit.index}"), \
                         tf.compat.v1.variable_scope(_fill(v)["unit"]):
                        r = identity = h
                        if v.preact:
                            r = taps[f"{unit.name}/preact"] = batch_norm(
                                h, _fill(v)["preact"], relu if v.preact_relu else None)
                            identity = r if v.identity_from == "preact" else h
                        if unit.shortcut:
                            into = r
                            if unit.avg_down:  # ResNet-D: TF's SAME average pool counts no padding
                                into = slim.avg_pool2d(r, 2, stride=unit.stride, padding="SAME",
                                                       scope="shortcut_pool")
                            shortcut = conv(unit.shortcut, into, "shortcut")
                        elif unit.stride > 1:  # identity, subsampled
                            shortcut = slim.max_pool2d(identity, 1, stride=unit.stride, scope="shortcut")
                        else:
                            shortcut = identity
                        taps[f"{unit.name}/shortcut"] = shortcut
                        for c in unit.convs:
                            r = taps[c.name] = conv(c, r, c.name.rsplit("/", 1)[1])
                        h = shortcut + r
                        h = taps[unit.name] = h if v.preact else relu(h)
        if v.preact:
            h = taps["post"] = batch_norm(h, "postnorm", relu)
        if not plan.has_pool(v):  # a backbone
            return taps
        if v.head_pool:  # average pool, flattened in NHWC order, then a dense layer
            h = slim.avg_pool2d(h, v.head_pool, stride=v.head_pool_stride, padding="VALID", scope="pool5")
            h = taps["pool"] = tf.reshape(h, [-1, plan.features(v)])
            logits = slim.fully_connected(h, v.num_classes, activation_fn=None, scope="logits")
        else:
            h = taps["pool"] = tf.reduce_mean(h, [1, 2], keepdims=True, name="pool5")
            if not plan.has_classifier(v):
                return taps
            logits = slim.conv2d(h, v.num_classes, 1, activation_fn=None, normalizer_fn=None, scope="logits")
        if v.head_activation == "softmax":
            taps["probs"] = tf.nn.softmax(logits, name="probs")
        else:
            taps["logits"] = logits
    return taps


def preprocessing(v: Description) -> str:
    """The input this library feeds a ResNet like `v` by habit (a name of equiv.preprocessing.RECORDS)."""
    return "slim-inception" if v.preact else "slim-vgg"


# ---------------------------------------------------------------------------------------
# Issue 16 B: normalisation, weight standardisation and heads (slim's logits are a 1x1 conv
# already, so head "conv" builds as "dense" does)


def norm_scope(v: Description) -> str:
    """The scope of a conv's norm inside the conv's: slim's batch_norm and group_norm defaults."""
    return "GroupNorm" if v.norm == "group" else "BatchNorm"


def group_norm(v: Description, h, scope: str, activation_fn):
    """GroupNorm of NHWC `h` (groups of consecutive channels, moments over the group's channels
    and the spatial axes), with gamma and beta variables named as slim's group_norm names them."""
    tf, _ = _libs()
    c = int(h.shape[-1])
    with tf.compat.v1.variable_scope(scope):
        beta = tf.compat.v1.get_variable("beta", [c], initializer=tf.zeros_initializer())
        gamma = tf.compat.v1.get_variable("gamma", [c], initializer=tf.ones_initializer()) if v.bn_scale else None
        shape = tf.shape(h)
        g = tf.reshape(h, tf.stack([shape[0], shape[1], shape[2], v.norm_groups, c // v.norm_groups]))
        mean, var = tf.nn.moments(g, [1, 2, 4], keepdims=True)
        y = tf.reshape((g - mean) * tf.math.rsqrt(var + v.bn_epsilon), shape)
        if gamma is not None:
            y = y * gamma
        y = y + beta
        return activation_fn(y) if activation_fn is not None else y


def std_conv2d(v: Description, c: plan.Conv, h, padding: str, scope: str):
    """A weight-standardised conv: variables `weights` (and `biases`) as slim.conv2d names them,
    the kernel standardised per output channel at run time."""
    tf, _ = _libs()
    with tf.compat.v1.variable_scope(scope):
        w = tf.compat.v1.get_variable("weights", [c.kernel, c.kernel, c.cin, c.cout])
        mean, var = tf.nn.moments(w, [0, 1, 2], keepdims=True)
        w = (w - mean) / tf.sqrt(var + v.ws_epsilon)
        h = tf.nn.conv2d(h, w, strides=[1, c.stride, c.stride, 1], padding=padding)
        if c.bias:
            h = tf.nn.bias_add(h, tf.compat.v1.get_variable("biases", [c.cout], initializer=tf.zeros_initializer()))
        return h
