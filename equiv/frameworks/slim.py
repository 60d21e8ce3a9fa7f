"""TF-slim adapter: the `tf_slim.nets` ResNets as they are, and every other variant built from
slim layers under the same naming scheme.

Each model lives in its own `tf.Graph` and `tf.compat.v1.Session`. Nothing here touches
TensorFlow's global state (no `disable_eager_execution`), because Keras 3 and torch run eagerly
in the same process. TensorFlow and tf_slim are imported on first use, so that importing this
module never fails and `available()` can say why it is unusable.

Names follow `tf_slim.nets` exactly, so official slim checkpoints read unchanged:

    stem/conv                 <scope>/conv1
    stage{s}/unit{u}          <scope>/block{s}/unit_{u}/<bottleneck|basic>_<v1|v2>
    stage{s}/unit{u}/conv{k}  <unit>/conv{k}   (and <unit>/shortcut, <unit>/preact)
    post                      <scope>/postnorm
    logits                    <scope>/logits   (a 1x1 conv: its kernel is (1, 1, features, classes))

and inside a layer: kernel -> weights, bias -> biases, bn/<field> -> BatchNorm/<field>
(preact and postnorm are bare BatchNorms: their fields sit directly under the layer).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from equiv import canonical as C
from equiv.errors import FrameworkError, ParamMismatchError
from equiv.frameworks.base import dist_version
from equiv.variants import Variant


@functools.cache
def _libs():
    """(tensorflow, tf_slim), imported on first use."""
    from equiv.frameworks import _slim_compat

    _slim_compat.install()  # before tf_slim builds its first layer (idempotent)
    import tensorflow as tf
    import tf_slim

    return tf, tf_slim


def available() -> str | None:
    try:
        _libs()
        from tf_slim.nets import resnet_v1, resnet_v2  # noqa: F401
    except Exception as e:  # noqa: BLE001  any import failure means "not usable here", never a crash
        return f"{type(e).__name__}: {e}"
    return None


# ---------------------------------------------------------------------------------------
# Names


def _is_seed(v: Variant) -> bool:
    """The seed's slim network computes `v` (any head size): its scopes are the seed's."""
    return v.built_by() == "equiv.seed.slim_resnet_v2"


# The scope names of library code other than tf_slim.nets, by the code a variant transcribes
# (Variant.reference): the seed's program calls its resnet_v2_50 `resnet_v2_6`, its units
# `residual_v2`, their pre-activation `preactivate`.
_DIALECTS = {"equiv.seed.slim_resnet_v2": {"scope": "resnet_v2_6", "unit": "residual_v2", "preact": "preactivate"}}


def _dialect(v: Variant) -> dict[str, str]:
    return _DIALECTS.get(v.built_by(), {})


def _scope(v: Variant) -> str:
    """The outer scope: the variant's short name, which for slim/ variants is exactly the
    default scope of the tf_slim.nets function (resnet_v2_50, ...)."""
    return _dialect(v).get("scope") or re.sub(r"[^0-9A-Za-z_.]", "_", v.short_name)


def _unit_kind(v: Variant) -> str:
    return _dialect(v).get("unit") or f"{v.block}_{'v2' if v.preact else 'v1'}"


def _layer(v: Variant, layer: str) -> str:
    """Canonical layer (or unit) name -> slim scope."""
    top = {"stem/conv": "conv1", "post": "postnorm", "logits": "logits"}
    if layer in top:
        return f"{_scope(v)}/{top[layer]}"
    s, u, rest = re.fullmatch(r"stage(\d+)/unit(\d+)(?:/(.+))?", layer).groups()
    unit = f"{_scope(v)}/block{s}/unit_{u}/{_unit_kind(v)}"
    if rest == "preact":
        rest = _preact_scope(v)
    return f"{unit}/{rest}" if rest else unit


def _preact_scope(v: Variant) -> str:
    return _dialect(v).get("preact", "preact")


_FIELDS = {"kernel": "weights", "bias": "biases"}  # BatchNorm fields keep their names


def framework_names(variant: Variant) -> dict[str, str]:
    out = {}
    for name in C.param_shapes(variant):
        layer, fld = name.rsplit("/", 1)
        if layer.endswith("/bn"):  # a conv's BatchNorm lives in the conv's scope
            layer, fld = layer[: -len("/bn")], f"BatchNorm/{fld}"
        out[name] = f"{_layer(variant, layer)}/{_FIELDS.get(fld, fld)}"
    return out


# The one layout difference from the canonical form: slim's logits are a 1x1 conv (after a
# global mean; a flattened head is a fully_connected layer, whose kernel is canonical).
def _to_slim(v: Variant, name: str, a: np.ndarray) -> np.ndarray:
    return a.reshape(1, 1, *a.shape) if name == "logits/kernel" and not v.head_pool else a


def _from_slim(v: Variant, name: str, a: np.ndarray) -> np.ndarray:
    return a.reshape(_from_slim_shape(v, name, a.shape))


def _from_slim_shape(v: Variant, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    # A kernel of any other shape is left as it is, for check_params to report.
    if name == "logits/kernel" and not v.head_pool and tuple(shape[:2]) == (1, 1):
        return tuple(shape[2:])
    return tuple(shape)


# ---------------------------------------------------------------------------------------
# The model


@dataclass
class SlimModel:
    graph: Any  # tf.Graph
    session: Any  # tf.compat.v1.Session on that graph
    inputs: Any  # NHWC float32 placeholder, [None, None, None, C]
    taps: dict[str, Any]  # canonical tap -> tensor ("pool" and "logits" already (N, C))
    variables: dict[str, Any]  # slim variable name (no ":0") -> variable
    reference: bool  # built by tf_slim.nets itself
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)  # ops made on demand

    def cached(self, key: str, make):
        """An op built once, inside this model's graph (Saver, assign ops)."""
        if key not in self._cache:
            with self.graph.as_default():
                self._cache[key] = make()
        return self._cache[key]

    def close(self) -> None:
        self.session.close()


def _has_reference(v: Variant) -> bool:
    """True when library code native to slim computes `v` (any head size): a tf_slim.nets
    function, or the seed's network (equiv.seed)."""
    return v.native == "slim" and bool(v.built_by())


def build(variant: Variant, *, reference: bool | None = None) -> SlimModel:
    tf, _ = _libs()
    if reference is None:
        reference = _has_reference(variant)
    elif reference and not _has_reference(variant):
        raise FrameworkError(f"{variant.name} has no tf_slim.nets reference implementation")
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, variant.in_channels], name="inputs")
        if reference and _is_seed(variant):
            from equiv.seed import slim_resnet_v2

            taps = slim_resnet_v2.build_taps(variant, x)
        else:
            taps = (_build_reference if reference else _build_generic)(variant, x)
        taps["pool"] = tf.reshape(taps["pool"], [-1, C.features(variant)])
        out = C.output_tap(variant)
        taps[out] = tf.reshape(taps[out], [-1, variant.num_classes])
        found = {var.op.name: var for var in tf.compat.v1.global_variables()}
        init = tf.compat.v1.global_variables_initializer()
    expected = set(framework_names(variant).values())
    if set(found) != expected:  # the naming scheme above and the graph must never drift apart
        raise FrameworkError(
            f"slim graph for {variant.name} does not have the expected variables: "
            f"missing {sorted(expected - set(found))[:3]}, unexpected {sorted(set(found) - expected)[:3]}")
    session = tf.compat.v1.Session(graph=graph)
    session.run(init)
    return SlimModel(graph, session, x, taps, found, reference)


def _build_reference(v: Variant, x) -> dict[str, Any]:
    """Build the tf_slim.nets function itself, then find each tap in its graph."""
    tf, slim = _libs()
    from tf_slim.nets import resnet_v1, resnet_v2

    module, function = v.reference.rsplit(".", 1)  # tf_slim.nets.resnet_v2.resnet_v2_50
    nets = {"tf_slim.nets.resnet_v1": resnet_v1, "tf_slim.nets.resnet_v2": resnet_v2}[module]
    with slim.arg_scope(nets.resnet_arg_scope()):
        _, end_points = getattr(nets, function)(x, num_classes=v.num_classes, is_training=False)
    g = tf.compat.v1.get_default_graph()
    scope = _scope(v)
    taps = {"stem/conv": end_points[f"{scope}/conv1"],
            "stem/pool": g.get_tensor_by_name(f"{scope}/pool1/MaxPool:0")}
    for unit in C.units(v):
        name = _layer(v, unit.name)
        if v.preact:
            taps[f"{unit.name}/preact"] = g.get_tensor_by_name(f"{name}/preact/Relu:0")
        # The unit's add is shortcut + residual, in that order, whatever the shortcut is.
        taps[f"{unit.name}/shortcut"] = g.get_operation_by_name(f"{name}/add").inputs[0]
        for c in unit.convs:
            taps[c.name] = end_points[_layer(v, c.name)]
        taps[unit.name] = end_points[name]
    if v.preact:
        taps["post"] = g.get_tensor_by_name(f"{scope}/postnorm/Relu:0")
    taps["pool"] = g.get_tensor_by_name(f"{scope}/pool5:0")
    taps["logits"] = end_points[f"{scope}/logits"]
    return taps


def _build_generic(v: Variant, x) -> dict[str, Any]:
    """Realise the description with slim layers, in tf_slim.nets' scoping and naming."""
    tf, slim = _libs()
    relu = tf.nn.relu

    def batch_norm(h, scope, activation_fn):
        return slim.batch_norm(h, center=True, scale=v.bn_scale, epsilon=v.bn_epsilon,
                               is_training=False, activation_fn=activation_fn, scope=scope)

    def pad(h, before, after, value=0.0):
        if before == after == 0:
            return h
        return tf.pad(h, [[0, 0], [before, after], [before, after], [0, 0]], constant_values=value)

    def conv(c: C.Conv, h, scope):
        # With stride 1 both rules pad (k-1)//2 before and the rest after, which is SAME
        # (what slim's conv2d_same uses there); only strided convs need the rule.
        if c.stride > 1 and c.padding == "symmetric":
            h, padding = pad(h, *C.pad_amounts("symmetric", 0, c.kernel, c.stride)), "VALID"
        else:
            padding = "SAME"
        act = relu if c.relu else None
        h = slim.conv2d(h, c.cout, c.kernel, stride=c.stride, padding=padding,
                        activation_fn=None if c.norm else act, normalizer_fn=None,
                        biases_initializer=tf.zeros_initializer() if c.bias else None, scope=scope)
        return batch_norm(h, f"{scope}/BatchNorm", act) if c.norm else h

    def max_pool(h):
        k, s = v.pool_kernel, v.pool_stride
        if v.pool_padding == "symmetric":
            value = -np.inf if v.pool_pad_value == "-inf" else 0.0
            h = pad(h, *C.pad_amounts("symmetric", 0, k, s), value=value)
        padding = "SAME" if v.pool_padding == "tf_same" else "VALID"  # SAME pads with -inf
        return slim.max_pool2d(h, k, stride=s, padding=padding, scope="pool1")

    taps = {}
    with tf.compat.v1.variable_scope(_scope(v)):
        h = taps["stem/conv"] = conv(C.stem(v), x, "conv1")
        h = taps["stem/pool"] = max_pool(h)
        for s, stage in itertools.groupby(C.units(v), key=lambda unit: unit.stage):
            with tf.compat.v1.variable_scope(f"block{s}"):
                for unit in stage:
                    with tf.compat.v1.variable_scope(f"unit_{unit.index}"), \
                         tf.compat.v1.variable_scope(_unit_kind(v)):
                        r = identity = h
                        if v.preact:
                            r = taps[f"{unit.name}/preact"] = batch_norm(
                                h, _preact_scope(v), relu if v.preact_relu else None)
                            identity = r if v.identity_from == "preact" else h
                        if unit.shortcut:
                            shortcut = conv(unit.shortcut, r, "shortcut")
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
        if v.head_pool:  # average pool, flattened in NHWC order, then a dense layer
            h = slim.avg_pool2d(h, v.head_pool, stride=v.head_pool_stride, padding="VALID", scope="pool5")
            h = taps["pool"] = tf.reshape(h, [-1, C.features(v)])
            logits = slim.fully_connected(h, v.num_classes, activation_fn=None, scope="logits")
        else:
            h = taps["pool"] = tf.reduce_mean(h, [1, 2], keepdims=True, name="pool5")
            logits = slim.conv2d(h, v.num_classes, 1, activation_fn=None, normalizer_fn=None, scope="logits")
        if v.head_activation == "softmax":
            taps["probs"] = tf.nn.softmax(logits, name="probs")
        else:
            taps["logits"] = logits
    return taps


# ---------------------------------------------------------------------------------------
# Parameters


def export_params(variant: Variant, model: SlimModel) -> dict[str, np.ndarray]:
    names = framework_names(variant)
    values = model.session.run({c: model.variables[s] for c, s in names.items()})
    return {c: np.asarray(_from_slim(variant, c, values[c]), np.float32) for c in names}


def load_params(variant: Variant, model: SlimModel, params) -> None:
    C.check_params(variant, params)
    tf, _ = _libs()
    names = framework_names(variant)

    def make():  # one placeholder and assign per variable, all run as one op
        variables = {c: model.variables[s] for c, s in names.items()}
        feeds = {c: tf.compat.v1.placeholder(tf.float32, var.shape) for c, var in variables.items()}
        return feeds, tf.group(*[var.assign(feeds[c], read_value=False) for c, var in variables.items()])

    feeds, assign = model.cached("load", make)
    model.session.run(assign, {feeds[c]: _to_slim(variant, c, np.asarray(params[c], np.float32)) for c in names})


def run(variant: Variant, model: SlimModel, x, taps=None) -> dict[str, np.ndarray]:
    names = C.resolve_taps(variant, taps)
    out = model.session.run({n: model.taps[n] for n in names}, {model.inputs: np.asarray(x, np.float32)})
    return {n: np.asarray(out[n], np.float32) for n in names}


def release(model: SlimModel) -> None:
    model.close()


# ---------------------------------------------------------------------------------------
# A user's model (what equiv.build(..., "slim") returned), and the environment

NAMING = "a slim model is read by variable name, as tf_slim.nets names them"


def owns(obj) -> bool:
    return isinstance(obj, SlimModel)


def model_names(model: SlimModel) -> set[str]:
    return set(model.variables)


def model_params(variant: Variant, model: SlimModel) -> dict[str, np.ndarray]:
    names = framework_names(variant)
    missing = [c for c, s in names.items() if s not in model.variables]
    unexpected = sorted(set(model.variables) - set(names.values()))
    if missing or unexpected:
        raise ParamMismatchError(variant.name, missing, unexpected, source="slim model")
    params = export_params(variant, model)
    C.check_params(variant, params, source="slim model")
    return params


def model_runner(variant: Variant, model: SlimModel):
    return (lambda x, taps: run(variant, model, x, taps)), None, None


def versions() -> dict[str, str]:
    tf, _ = _libs()
    return {"tensorflow": tf.__version__, "tf-slim": dist_version("tf-slim"), "tf-keras": dist_version("tf-keras")}


def engine() -> str:
    return "tensorflow"


def thread_pools() -> list[dict]:
    """Thread pools of its own beyond the BLAS and OpenMP ones threadpoolctl sees: none told here."""
    return []


def device_name(device: str) -> str | None:
    """The accelerator a device string means here: slim runs on the CPU only."""
    return None


# ---------------------------------------------------------------------------------------
# Checkpoint files (tf.train.Saver format, slim's variable names)


def write_file(variant: Variant, model: SlimModel, path) -> str:
    """Write the model's variables, under slim's names, as a TF checkpoint at prefix `path` (a path
    ending in .index names its prefix); returns the prefix."""
    path = str(path).removesuffix(".index")
    tf, _ = _libs()
    saver = model.cached("saver", lambda: tf.compat.v1.train.Saver(
        var_list=[model.variables[s] for s in framework_names(variant).values()]))
    with model.graph.as_default():  # outside it TF 2 takes its eager path and fails
        return saver.save(model.session, str(path), write_meta_graph=False)


def checkpoint_params(variant: Variant, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple]:
    """What a checkpoint of declared `shapes` (slim name -> shape) holds, by canonical name, as
    shapes: the canonical parameters it has, and anything else in the network's scope by its
    slim name (reported as unexpected). Variables outside the scope (global_step) are bookkeeping."""
    names = framework_names(variant)
    known = set(names.values())
    out = {c: _from_slim_shape(variant, c, tuple(shapes[s])) for c, s in names.items() if s in shapes}
    scope = _scope(variant) + "/"
    out.update({s: tuple(shape) for s, shape in shapes.items() if s.startswith(scope) and s not in known})
    return out


def read_file(variant: Variant, path: str) -> dict[str, np.ndarray]:
    """Canonical parameters from a TF checkpoint with slim's names (no graph needed).

    Names and shapes are checked from the index before any tensor is read, and a parameter
    that is not floating point is refused by name. A file from a stranger goes through
    equiv.files.read, which checks the index itself before TensorFlow's reader sees it."""
    from equiv import limits

    tf, _ = _libs()
    reader = tf.train.load_checkpoint(str(path))
    C.check_shapes(variant, checkpoint_params(variant, reader.get_variable_to_shape_map()), source=str(path))
    dtypes = reader.get_variable_to_dtype_map()
    names = framework_names(variant)
    for c, s in names.items():
        if not dtypes[s].is_floating:
            limits.refuse_dtype(str(path), c, f"{dtypes[s].name} (as {s})")
    return {c: np.asarray(_from_slim(variant, c, reader.get_tensor(s)), np.float32) for c, s in names.items()}


# ---------------------------------------------------------------------------------------
# Benchmarks


# Documented fast paths `equiv bench --best` tries, each checked against the plain path.
FAST_PATHS = {"xla": {"xla": True}}  # XLA auto-clustering (global_jit_level ON_1)


def forward_fn(variant: Variant, model: SlimModel, x: np.ndarray, *, device: str = "cpu",
               dtype: str = "float32", channels_last: bool = False, xla: bool = False):
    """A callable running one forward pass and returning the logits (what a benchmark times).
    `xla` runs it in a second session on the same graph, compiled by XLA, holding a copy of
    the model's variables (the caller's session is left as it is)."""
    if device != "cpu" or dtype != "float32" or channels_last:
        raise FrameworkError("slim runs float32 NHWC on the CPU here (its graph is built in float32)")
    feed = {model.inputs: np.asarray(x, np.float32)}
    logits = model.taps[C.output_tap(variant)]
    session = model.session
    if xla:
        tf, _ = _libs()
        config = tf.compat.v1.ConfigProto()
        config.graph_options.optimizer_options.global_jit_level = tf.compat.v1.OptimizerOptions.ON_1
        session = tf.compat.v1.Session(graph=model.graph, config=config)
        copy = SlimModel(model.graph, session, model.inputs, model.taps, model.variables, model.reference,
                         model._cache)
        load_params(variant, copy, export_params(variant, model))  # every variable: no initializer needed
    return lambda: session.run(logits, feed)


def matmul_fn(n: int, *, device: str = "cpu", dtype: str = "float32"):
    """A callable multiplying two n x n matrices in TensorFlow (the ceiling benchmark)."""
    tf, _ = _libs()
    if device != "cpu":
        raise FrameworkError("no CUDA TensorFlow here")
    a = tf.random.normal((n, n), dtype=getattr(tf, dtype))
    b = tf.random.normal((n, n), dtype=getattr(tf, dtype))
    mm = tf.function(lambda: tf.linalg.matmul(a, b))
    return lambda: mm().numpy()
