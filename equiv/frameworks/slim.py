"""TF-slim backend: each model in its own `tf.Graph` and `tf.compat.v1.Session`; parameters in
and out by variable name, runs with taps, TF checkpoints.

What a network is in slim (its graph, its scopes and variable names, which tensors are its taps)
is its family's slim builder (equiv/families/<family>/slim.py). Nothing here touches
TensorFlow's global state (no `disable_eager_execution`), because Keras 3 and torch run eagerly
in the same process. TensorFlow and tf_slim are imported on first use, so that importing this
module never fails and `available()` can say why it is unusable.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from equiv import canonical as C
from equiv import families
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


# What a family's slim builder provides beyond build(v, x, *, reference) -> (taps, by library), framework_names
# and DIALECTS: the outer scope of its checkpoints, and the shape slim stores a parameter in.
BUILDER = ("scope", "slim_shape", "canonical_shape")

def available() -> str | None:
    try:
        _libs()
        from tf_slim.nets import resnet_v1, resnet_v2  # noqa: F401
    except Exception as e:  # noqa: BLE001  any import failure means "not usable here", never a crash
        return f"{type(e).__name__}: {e}"
    return None


# ---------------------------------------------------------------------------------------
# Names: the family's slim builder (equiv/families/<family>/slim.py) holds the dialect


def framework_names(variant: Variant) -> dict[str, str]:
    """canonical name -> slim variable name, in the dialect of the family's slim builder."""
    return families.builder(variant, "slim").framework_names(variant)


def _to_slim(v: Variant, name: str, a: np.ndarray) -> np.ndarray:
    return a.reshape(_slim_shape(v, name, a.shape))


def _slim_shape(v: Variant, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(families.builder(v, "slim").slim_shape(v, name, tuple(shape)))


def _from_slim(v: Variant, name: str, a: np.ndarray) -> np.ndarray:
    return a.reshape(_from_slim_shape(v, name, a.shape))


def _from_slim_shape(v: Variant, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    # A kernel of any other shape is left as it is, for check_params to report.
    return tuple(families.builder(v, "slim").canonical_shape(v, name, tuple(shape)))


# ---------------------------------------------------------------------------------------
# The model


@dataclass
class SlimModel:
    graph: Any  # tf.Graph
    raw_session: Any  # tf.compat.v1.Session on that graph; `session` is the one to use
    inputs: Any  # NHWC float32 placeholder, [None, None, None, C]
    taps: dict[str, Any]  # canonical tap -> tensor ("pool" and "logits" already (N, C))
    variables: dict[str, Any]  # slim variable name (no ":0") -> variable
    reference: bool  # built by tf_slim.nets itself
    init: Any = None  # the variables' own initializers, run only if nothing loads them first
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)  # ops made on demand

    @property
    def session(self):
        """The session, every variable initialized: by load_params, or else (on first use) by the
        initializers tf_slim gave them. A port or check loads every variable at once, so it never
        pays for drawing 25 M random numbers it would overwrite."""
        if self.init is not None:
            self.raw_session.run(self.init)
            self.init = None
        return self.raw_session

    def cached(self, key: str, make):
        """An op built once, inside this model's graph (Saver, assign ops)."""
        if key not in self._cache:
            with self.graph.as_default():
                self._cache[key] = make()
        return self._cache[key]

    def close(self) -> None:
        self.raw_session.close()


def build(variant: Variant, *, reference: bool | None = None) -> SlimModel:
    """The model of `variant` in a graph and session of its own: the family's slim builder makes
    the graph (the library's own code where it computes `variant`), this makes the session."""
    tf, _ = _libs()
    graph = tf.Graph()
    with graph.as_default(), _identity_equality(tf):
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, variant.in_channels], name="inputs")
        taps, reference = families.builder(variant, "slim").build(variant, x, reference=reference)
        found = {var.op.name: var for var in tf.compat.v1.global_variables()}
        init = tf.compat.v1.global_variables_initializer()
    expected = set(framework_names(variant).values())
    if set(found) != expected:  # the naming scheme and the graph must never drift apart
        raise FrameworkError(
            f"slim graph for {variant.name} does not have the expected variables: "
            f"missing {sorted(expected - set(found))[:3]}, unexpected {sorted(set(found) - expected)[:3]}")
    return SlimModel(graph, tf.compat.v1.Session(graph=graph), x, taps, found, reference, init)


@contextmanager
def _identity_equality(tf):
    """Graph tensors and variables compared and hashed by identity while a graph is built.

    In a TF1 graph they are compared by identity anyway; what TensorFlow 2 spends is the check
    that says so (executing_eagerly_outside_functions, about 40 us), on every hash. tf_keras' legacy
    layers put all the graph's variables in a set for each weight they add: 37 000 hashes for a
    ResNet-50, a third of its build. `tf.compat.v1.disable_tensor_equality` skips the check; the
    previous setting is restored after (Keras 3 on TensorFlow runs eagerly in this process too)."""
    before = tf.Tensor._USE_EQUALITY
    tf.compat.v1.disable_tensor_equality()
    try:
        yield
    finally:
        tf.Tensor._USE_EQUALITY = before


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
    # every variable is assigned (build checked that `names` covers them all): no initializer needed
    model.raw_session.run(assign, {feeds[c]: _to_slim(variant, c, np.asarray(params[c], np.float32))
                                   for c in names})
    model.init = None


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
    scope = families.builder(variant, "slim").scope(variant) + "/"
    out.update({s: tuple(shape) for s, shape in shapes.items() if s.startswith(scope) and s not in known})
    return out


def read_file(variant: Variant, path: str, *, lazy: bool = False, entries=None) -> dict[str, np.ndarray]:
    """Canonical parameters from a TF checkpoint with slim's names (no graph, and for float
    tensors no TensorFlow: equiv.tf_reader).

    Names and shapes are checked from the index (equiv.tf_index) before any tensor is read, and a
    parameter that is not floating point is refused by name.
    `lazy=True`: an equiv.files.Lazy that reads each tensor when it is taken (a port to torch).
    `entries`: the index as equiv.tf_index.read gave it, where the caller has read it already."""
    from equiv import limits, tf_index, tf_reader

    entries = entries or tf_index.read(str(path))
    C.check_shapes(variant, checkpoint_params(variant, {n: e.shape for n, e in entries.items()}), source=str(path))
    names = framework_names(variant)
    for c, s in names.items():
        if not entries[s].floating:
            limits.refuse_dtype(str(path), c, f"{entries[s].dtype_name()} (as {s})")
    get = tf_reader.reader(str(path), entries)
    if lazy:
        from equiv import files

        return files.Lazy(C.param_shapes(variant),
                          lambda c: np.asarray(_from_slim(variant, c, get(names[c])), np.float32))
    return {c: np.asarray(_from_slim(variant, c, get(s)), np.float32) for c, s in names.items()}


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
                         _cache=model._cache)
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
