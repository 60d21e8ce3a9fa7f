"""The Inception v3 family in TF-slim: tf_slim.nets.inception_v3 as it is, and every other
description built from slim layers under the same naming scheme, so its checkpoints read unchanged:

    stem/conv{j}                  InceptionV3/Conv2d_1a_3x3, ... (weights; BatchNorm/beta, moving_*)
    mixed{i}/branch{b}/conv{k}    InceptionV3/Mixed_5b/Branch_1/Conv2d_0b_5x5, ... (slim's own, irregular
                                  names: Mixed_5c's Branch_1 is Conv2d_0b_1x1, Conv_1_0c_5x5)
    aux/conv1, aux/conv2          InceptionV3/AuxLogits/Conv2d_1b_1x1, Conv2d_2a_5x5
    aux/logits, logits            InceptionV3/AuxLogits/Conv2d_2b_1x1, InceptionV3/Logits/Conv2d_1c_1x1

Any other description is named systematically (Stem/Conv2d_{j}, Mixed_{i}/Branch_{b}/Conv2d_{k}).

Layout: slim's logits (and auxiliary logits) are 1x1 convs: the canonical (in, classes) kernel
stored as (1, 1, in, classes) (`slim_shape`). BatchNorm has no gamma where bn_scale is False
(tf_slim's default scale=False in inception_v3_arg_scope).
"""

from __future__ import annotations

import re
from typing import Any

from equiv.families.base import Dialect, library_build
from equiv.families.inception import plan, zoo
from equiv.families.inception.description import Inception as Description
from equiv.families.inception.reference import IMAGENET_MEAN, IMAGENET_STD
from equiv.frameworks.slim import _libs

SCOPE = "InceptionV3"  # tf_slim.nets.inception_v3's default scope

_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_3a_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
         "MaxPool_5a_3x3")
_MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
          "Mixed_7a", "Mixed_7b", "Mixed_7c")
_A = [(["Conv2d_0a_1x1"], []), (["Conv2d_0a_1x1", "Conv2d_0b_5x5"], []),
      (["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"], []), (["AvgPool_0a_3x3", "Conv2d_0b_1x1"], [])]
_C = [(["Conv2d_0a_1x1"], []), (["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"], []),
      (["Conv2d_0a_1x1", "Conv2d_0b_7x1", "Conv2d_0c_1x7", "Conv2d_0d_7x1", "Conv2d_0e_1x7"], []),
      (["AvgPool_0a_3x3", "Conv2d_0b_1x1"], [])]
_E = [(["Conv2d_0a_1x1"], []), (["Conv2d_0a_1x1"], ["Conv2d_0b_1x3", "Conv2d_0b_3x1"]),
      (["Conv2d_0a_1x1", "Conv2d_0b_3x3"], ["Conv2d_0c_1x3", "Conv2d_0d_3x1"]),
      (["AvgPool_0a_3x3", "Conv2d_0b_1x1"], [])]
# Per mixed block, per branch: (its layers' scopes, its split convs' scopes), as tf_slim writes them
_BRANCHES = [
    _A,
    [_A[0], (["Conv2d_0b_1x1", "Conv_1_0c_5x5"], []), _A[2], _A[3]],  # Mixed_5c's odd names
    _A,
    [(["Conv2d_1a_1x1"], []), (["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_1x1"], []), (["MaxPool_1a_3x3"], [])],
    _C, _C, _C, _C,
    [(["Conv2d_0a_1x1", "Conv2d_1a_3x3"], []),
     (["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1", "Conv2d_1a_3x3"], []), (["MaxPool_1a_3x3"], [])],
    _E,
    [_E[0], (["Conv2d_0a_1x1"], ["Conv2d_0b_1x3", "Conv2d_0c_3x1"]), _E[2], _E[3]],  # Mixed_7c's
]


def scope(v: Description) -> str:
    return SCOPE


def _slim_layers(v: Description) -> dict[str, str]:
    """Canonical layer (pools and mixed blocks too) -> its scope under SCOPE."""
    out: dict[str, str] = {}
    if zoo.is_inception_v3(v):
        out.update({layer.name: s for layer, s in zip(plan.stem(v), _STEM)})
        for blk, mixed, branches in zip(plan.blocks(v), _MIXED, _BRANCHES):
            out[blk.name] = mixed
            for b, (br, (layers, splits)) in enumerate(zip(blk.branches, branches)):
                out.update({x.name: f"{mixed}/Branch_{b}/{s}" for x, s in zip(br.layers, layers)})
                out.update({x.name: f"{mixed}/Branch_{b}/{s}" for x, s in zip(br.split, splits)})
    else:
        for layer in plan.stem(v):
            kind, j = re.fullmatch(r"stem/(conv|pool)(\d+)", layer.name).groups()
            out[layer.name] = f"Stem/{'Conv2d' if kind == 'conv' else 'Pool'}_{j}"
        for blk in plan.blocks(v):
            out[blk.name] = f"Mixed_{blk.index}"
            for br in blk.branches:
                for x in (*br.layers, *br.split):
                    last = x.name.rsplit("/", 1)[1]
                    out[x.name] = f"Mixed_{blk.index}/Branch_{br.index}/{last[0].upper()}{last[1:]}"
    out.update({"aux/pool": "AuxLogits/AvgPool_1a_5x5", "aux/conv1": "AuxLogits/Conv2d_1b_1x1",
                "aux/conv2": "AuxLogits/Conv2d_2a_5x5", "aux/logits": "AuxLogits/Conv2d_2b_1x1",
                "logits": "Logits/Conv2d_1c_1x1"})
    return out


def framework_names(variant: Description) -> dict[str, str]:
    where = _slim_layers(variant)
    out = {}
    for name in plan.param_shapes(variant):
        layer, fld = name.rsplit("/", 1)
        if layer.endswith("/bn"):
            out[name] = f"{SCOPE}/{where[layer[:-3]]}/BatchNorm/{fld}"
        else:
            out[name] = f"{SCOPE}/{where[layer]}/{'weights' if fld == 'kernel' else 'biases'}"
    return out


_DENSE = ("logits/kernel", "aux/logits/kernel")


def slim_shape(v: Description, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape slim stores canonical parameter `name` of `shape` in (the logits as 1x1 convs)."""
    return (1, 1, *shape) if name in _DENSE and len(shape) == 2 else shape


def canonical_shape(v: Description, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[2:]) if name in _DENSE and len(shape) == 4 and shape[:2] == (1, 1) else shape


# ---------------------------------------------------------------------------------------
# Building


def _build_reference(v: Description, x) -> dict[str, Any]:
    """tf_slim.nets.inception_v3's own function (is_training=False: no dropout, stored BatchNorm
    statistics) in its own arg scope; taps from its end points and, inside the blocks, from the
    graph's tensors by name."""
    tf, slim = _libs()
    from tf_slim.nets import inception_v3 as net

    with slim.arg_scope(net.inception_v3_arg_scope()):
        _, end_points = net.inception_v3(x, num_classes=v.num_classes, is_training=False,
                                         create_aux_logits=v.aux_logits, spatial_squeeze=True)
    graph = tf.compat.v1.get_default_graph()
    where = _slim_layers(v)
    first = where[plan.stem(v)[0].name]
    ops = end_points[first].name.rsplit(first, 1)[0]  # the name scope of its ops ("InceptionV3/InceptionV3/")

    def tensor(layer) -> Any:
        s = where[layer.name]
        if isinstance(layer, plan.Conv):
            return graph.get_tensor_by_name(f"{ops}{s}/Relu:0")
        op = "MaxPool" if layer.kind == "max" else "AvgPool"
        return graph.get_tensor_by_name(f"{ops}{s}/{op}:0")

    taps: dict[str, Any] = {layer.name: end_points[where[layer.name]] for layer in plan.stem(v)}
    for blk in plan.blocks(v):
        for br in blk.branches:
            for layer in (br.split or br.layers[-1:]):
                taps[layer.name] = tensor(layer)
        taps[blk.name] = end_points[where[blk.name]]
    if v.aux_logits:
        taps["aux/logits"] = end_points["AuxLogits"]
    taps["pool"] = end_points["PreLogits"]
    taps["logits"] = end_points["Logits"]
    return taps


DIALECTS = {
    "tf_slim.nets": Dialect("tf_slim.nets.", build=_build_reference),
}


def build(variant: Description, x, *, reference: bool | None = None) -> tuple[dict[str, Any], bool]:
    tf, _ = _libs()
    reference, make = library_build(DIALECTS, "slim", variant, reference)
    taps = (make or _build_generic)(variant, x)
    taps["pool"] = tf.reshape(taps["pool"], [-1, plan.features(variant)])
    for name in ("logits", "aux/logits"):
        if name in taps:
            taps[name] = tf.reshape(taps[name], [-1, variant.num_classes])
    return taps, reference


def _build_generic(v: Description, x) -> dict[str, Any]:
    """The description in slim layers, named as tf_slim.nets.inception_v3 names them."""
    tf, slim = _libs()
    where = _slim_layers(v)
    taps: dict[str, Any] = {}

    def conv(c: plan.Conv, h):
        h = slim.conv2d(h, c.cout, [c.kh, c.kw], stride=c.stride, padding="SAME" if c.padding == "tf_same" else "VALID",
                        activation_fn=None, normalizer_fn=None, biases_initializer=None,
                        scope=where[c.name].rsplit("/", 1)[-1])
        return slim.batch_norm(h, center=True, scale=v.bn_scale, epsilon=v.bn_epsilon, is_training=False,
                               activation_fn=tf.nn.relu, scope=f"{where[c.name].rsplit('/', 1)[-1]}/BatchNorm")

    def pool(p: plan.Pool, h):
        padding = "SAME" if p.padding == "tf_same" else "VALID"
        sc = where[p.name].rsplit("/", 1)[-1]
        if p.kind == "max":
            return slim.max_pool2d(h, p.k, stride=p.stride, padding=padding, scope=sc)
        if padding == "SAME" and v.pool_count_pad:  # torch's count_include_pad: pad zeros, then VALID
            k = p.k // 2
            h = tf.pad(h, [[0, 0], [k, k], [k, k], [0, 0]])
            padding = "VALID"
        return slim.avg_pool2d(h, p.k, stride=p.stride, padding=padding, scope=sc)

    def layer(op, h):
        return conv(op, h) if isinstance(op, plan.Conv) else pool(op, h)

    def scoped(path: str):
        return tf.compat.v1.variable_scope(path) if path else _nullscope()

    with tf.compat.v1.variable_scope(SCOPE):
        h = x
        if v.transform_input:
            scale = tf.constant([s / 0.5 for s in IMAGENET_STD], tf.float32)
            shift = tf.constant([(m - 0.5) / 0.5 for m in IMAGENET_MEAN], tf.float32)
            h = h * scale + shift
        for op in plan.stem(v):
            with scoped(where[op.name].rsplit("/", 1)[0] if "/" in where[op.name] else ""):
                h = taps[op.name] = layer(op, h)
        for blk in plan.blocks(v):
            parts = []
            with tf.compat.v1.variable_scope(where[blk.name]):
                for br in blk.branches:
                    with tf.compat.v1.variable_scope(f"Branch_{br.index}"):
                        b = h
                        for op in br.layers:
                            b = layer(op, b)
                        if br.split:
                            ends = [conv(e, b) for e in br.split]
                            taps.update({e.name: y for e, y in zip(br.split, ends)})
                            parts.append(tf.concat(ends, 3))
                        else:
                            taps[br.layers[-1].name] = b
                            parts.append(b)
                h = taps[blk.name] = tf.concat(parts, 3)
            if v.aux_logits and blk.index == v.aux_from:
                with tf.compat.v1.variable_scope("AuxLogits"):
                    a = slim.avg_pool2d(h, plan.AUX_POOL.k, stride=plan.AUX_POOL.stride, padding="VALID",
                                        scope="AvgPool_1a_5x5")
                    for c in plan.aux_convs(v):
                        a = conv(c, a)
                    a = tf.reduce_mean(a, [1, 2], keepdims=True)
                    taps["aux/logits"] = slim.conv2d(a, v.num_classes, 1, activation_fn=None, normalizer_fn=None,
                                                     scope="Conv2d_2b_1x1")
        with tf.compat.v1.variable_scope("Logits"):
            h = taps["pool"] = tf.reduce_mean(h, [1, 2], keepdims=True)
            taps["logits"] = slim.conv2d(h, v.num_classes, 1, activation_fn=None, normalizer_fn=None,
                                         scope="Conv2d_1c_1x1")
    return taps


class _nullscope:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def preprocessing(v: Description) -> str:
    """The input tf_slim's Inception v3 was trained on (a name of equiv.preprocessing.RECORDS)."""
    return "slim-inception"
