"""Keras 3 backend: parameters in and out by variable path, runs with taps, weight files.

What a network is in Keras (its model, its layer names, which layers are its taps) is its
family's Keras builder (equiv/families/<family>/keras.py). Keras stores kernels HWIO and dense
kernels (in, out), as the canonical form does: no parameter is transposed.

No backend API is called, only Keras' own, so it runs on any Keras backend (seen with
TensorFlow, PyTorch and JAX).
"""

from __future__ import annotations

import importlib
import re
import sys
import tempfile
import weakref
from pathlib import Path

import numpy as np

from equiv import canonical as C
from equiv import families
from equiv.errors import EquivError, FrameworkError, ParamMismatchError
from equiv.variants import Variant

try:
    import keras  # the real package: absolute import, not this module
except Exception as error:  # not installed, or its backend fails to import: available() says so
    keras = None
    _IMPORT_ERROR = f"keras does not import: {type(error).__name__}: {error}"



# What a family's Keras builder provides beyond build, framework_names and DIALECTS: every tap's Keras
# tensor in a model (and, optionally, keras2_layer_names for Keras 2 files named by class and counter).
BUILDER = ("tap_outputs",)

def available() -> str | None:
    return None if keras is not None else _IMPORT_ERROR


# ---------------------------------------------------------------------------------------
# Building: the network's family realises it (equiv/families/<family>/keras.py)


def build(variant: Variant, *, reference: bool | None = None):
    """The family's Keras model of `variant`: the reference library's own where it computes it
    (keras.applications, the seed's program), else equiv's generic functional model.

    They take any input size and batch (a (None, None, C) input), except where a flattened
    head fixes the size, and output logits (probabilities after a softmax head).
    """
    if keras is None:
        raise FrameworkError(_IMPORT_ERROR)
    return families.builder(variant, "keras").build(variant, reference=reference)


def framework_names(variant: Variant) -> dict[str, str]:
    """Canonical name -> Keras variable path ('conv2_block1_1_conv/kernel'), in the dialect of
    the family's Keras builder."""
    return families.builder(variant, "keras").framework_names(variant)


def keras2_layer_names(variant: Variant, layer_names) -> dict[str, str]:
    """File layer name -> model layer name, for a Keras 2 `.h5` file whose layers the network's
    dialect names otherwise (the seed's auto-named layers); {} where nothing is renamed."""
    rename = getattr(families.builder(variant, "keras"), "keras2_layer_names", None)
    return rename(variant, layer_names) if rename else {}


if keras is not None:

    @keras.saving.register_keras_serializable(package="equiv")
    class NegInfPadding2D(keras.layers.Layer):
        """ZeroPadding2D's twin padding with -inf, so that padding never wins a max-pool
        (PyTorch's MaxPool2d(padding=1) convention), unlike keras.applications' zeros."""

        def __init__(self, padding, **kwargs):
            super().__init__(**kwargs)
            self.padding = tuple(tuple(int(n) for n in p) for p in padding)

        def call(self, x):
            (t, b), (l, r) = self.padding
            return keras.ops.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=float("-inf"))

        def compute_output_shape(self, shape):
            (t, b), (l, r) = self.padding
            n, h, w, c = shape
            return n, None if h is None else h + t + b, None if w is None else w + l + r, c

        def get_config(self):
            return {**super().get_config(), "padding": self.padding}


def padding_layers(rule: str, kernel: int, stride: int, x, name: str, pad_layer=None):
    """Realise a padding rule (equiv.canonical) before a conv or pool, for any family's builder:
    (x, the Keras padding argument)."""
    if rule == "tf_same":
        return x, "same"  # Keras' "same" is TensorFlow's SAME on every backend
    # "symmetric" pads by the kernel alone; "valid" not at all. The size does not matter.
    before, after = C.pad_amounts(rule, 0, kernel, stride)
    if before or after:
        pad_layer = pad_layer or keras.layers.ZeroPadding2D
        x = pad_layer(((before, after), (before, after)), name=name)(x)
    return x, "valid"


# ---------------------------------------------------------------------------------------
# Parameters


def _tf_keras(model) -> bool:
    """`model` is a tf_keras (Keras 2) model: read by the same layer names, run by tf_keras itself."""
    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(model, tf_keras.Model)


def _path(w) -> str:
    """A variable's 'layer/field' path: Keras 3's `path`; tf_keras' `name` without its ':0'."""
    path = getattr(w, "path", None)
    return path if isinstance(path, str) else w.name.rsplit(":", 1)[0]


def _variables(v: Variant, model) -> dict[str, object]:
    """Canonical name -> the model's variable; ParamMismatchError if the model is not `v`'s.

    A model whose auto-named layers were numbered on from another model's (`conv2d_94`: Keras counts
    per process) is read under the names a fresh process gives them, where those fit (`_renumbered`)."""
    names = framework_names(v)
    by_path = {_path(w): w for w in model.weights}
    found = _fit(v, names, by_path)
    if found is None:
        return {n: by_path[path] for n, path in names.items()}
    aliases = _renumbered(model)
    if aliases:
        renamed = {_renamed_path(path, aliases): w for path, w in by_path.items()}
        if _fit(v, names, renamed) is None:
            _ALIASES[model] = aliases
            return {n: renamed[path] for n, path in names.items()}
    missing, unexpected, mismatched = found
    raise ParamMismatchError(v.name, missing, unexpected, mismatched, source=f"Keras model {model.name}")


def _fit(v: Variant, names: dict[str, str], by_path: dict[str, object]):
    """None when `by_path` holds exactly `names` in their shapes, else (missing, unexpected, mismatched)."""
    missing = [n for n, path in names.items() if path not in by_path]
    unexpected = sorted(set(by_path) - set(names.values()))
    mismatched = [(n, shape, tuple(by_path[names[n]].shape))
                  for n, shape in C.param_shapes(v).items()
                  if names[n] in by_path and tuple(by_path[names[n]].shape) != shape]
    return (missing, unexpected, mismatched) if missing or unexpected or mismatched else None


# A user's model -> {its layer name: the name a fresh process gives that layer}, for a model read so
_ALIASES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NUMBERED = re.compile(r"^(?P<base>.+?)_(?P<k>\d+)$")


def _renumbered(model) -> dict[str, str]:
    """Keras names an unnamed layer after its class and a per-process counter (`conv2d`, `conv2d_1`, ...),
    so a keras.applications model built after another one has `conv2d_94` where a fresh process has
    `conv2d`. Each such run of numbers, shifted back to start at the bare name; layers named otherwise
    are left as they are."""
    runs: dict[str, list[tuple[str, int]]] = {}
    for layer in model.layers:
        m = _NUMBERED.match(layer.name)
        base, k = (m["base"], int(m["k"])) if m else (layer.name, 0)
        runs.setdefault(base, []).append((layer.name, k))
    aliases = {}
    for base, items in runs.items():
        low = min(k for _, k in items)
        if low:
            aliases.update({name: base if k == low else f"{base}_{k - low}" for name, k in items})
    return aliases


def _renamed_path(path: str, aliases: dict[str, str]) -> str:
    layer, _, rest = path.partition("/")
    return f"{aliases.get(layer, layer)}/{rest}" if rest else path


class _AsNamed:
    """A user's model seen under its layers' fresh-process names (for the family's tap_outputs)."""

    def __init__(self, model, aliases: dict[str, str]):
        self._model = model
        self._layers = {aliases.get(layer.name, layer.name): layer for layer in model.layers}
        self.layers = [_LayerAs(layer, name) for name, layer in self._layers.items()]

    def get_layer(self, name: str):
        if name not in self._layers:
            raise ValueError(f"no layer {name!r} in model {self._model.name}")
        return self._layers[name]

    def __getattr__(self, attr):
        return getattr(self._model, attr)


class _LayerAs:
    def __init__(self, layer, name: str):
        self._layer, self.name = layer, name

    def __getattr__(self, attr):
        return getattr(self._layer, attr)


def export_params(variant: Variant, model) -> dict[str, np.ndarray]:
    return {n: np.array(w.numpy(), dtype=np.float32, copy=True)
            for n, w in _variables(variant, model).items()}


def load_params(variant: Variant, model, params) -> None:
    C.check_params(variant, params)
    for n, w in _variables(variant, model).items():
        w.assign(np.asarray(params[n], dtype=np.float32))


# ---------------------------------------------------------------------------------------
# Running

_TAP_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tap_model(v: Variant, model):
    """One multi-output model per model, giving every tap (built once, then cached)."""
    tapper = _TAP_MODELS.get(model)
    if tapper is None:
        aliases = _ALIASES.get(model)
        outputs = families.builder(v, "keras").tap_outputs(v, _AsNamed(model, aliases) if aliases else model)
        make = sys.modules["tf_keras"].Model if _tf_keras(model) else keras.Model  # the model's own library
        tapper = make(model.inputs[0], {t: outputs[t] for t in C.tap_names(v)})
        _TAP_MODELS[model] = tapper
    return tapper


def run(variant: Variant, model, x, taps=None) -> dict[str, np.ndarray]:
    names = C.resolve_taps(variant, taps)
    out = _tap_model(variant, model)(np.asarray(x, dtype=np.float32), training=False)
    if _tf_keras(model):  # TensorFlow tensors
        return {t: np.asarray(out[t], dtype=np.float32) for t in names}
    return {t: np.asarray(keras.ops.convert_to_numpy(out[t]), dtype=np.float32) for t in names}


def release(model) -> None:
    """Free what a model equiv built holds, though its caller may still name it (`with loaded(...) as
    model` keeps the name until the next stage has built): its variables' storage, then, on
    TensorFlow, the eager kernels that ran it, which keep what oneDNN made of its weights until the
    variables are gone (a whole VGG-16, 548 MB, was held through the next framework's stage of a
    check). The model cannot run after; loaded() releases only the models it built. Idempotent."""
    for w in model.weights:
        if hasattr(w, "_value"):
            w._value = None
    _TAP_MODELS.pop(model, None)
    if keras.backend.backend() == "tensorflow":
        try:
            from tensorflow.python.eager import context
        except ImportError:  # pragma: no cover - a TensorFlow without it keeps its cache
            return
        context.context().clear_kernel_cache()


# ---------------------------------------------------------------------------------------
# A user's Keras model, and the environment

NAMING = ("a Keras model (Keras 3, or tf_keras' Keras 2) is read by layer name, as keras.applications names "
          "its layers (equiv.frameworks.keras.framework_names(variant) lists them)")


def owns(obj) -> bool:
    return (keras is not None and isinstance(obj, keras.Model)) or _tf_keras(obj)


def model_names(model) -> set[str]:
    return {_path(w) for w in model.weights}


def model_notes(variant: Variant, model) -> list[str]:
    """Which code runs a user's model (tf_keras' own call for a Keras 2 model), and a softmax on its
    output where the variant's logits have none (keras.applications' default head)."""
    notes = []
    if _tf_keras(model):
        notes.append(f"tf_keras {sys.modules['tf_keras'].__version__} model {model.name}: run by tf_keras itself "
                     "(its own call, tapped at its layers' outputs)")
    aliases = _ALIASES.get(model)
    if aliases:
        first = next(iter(aliases.items()))
        notes.append(f"the model's layers were numbered on from another model's ({first[0]} where a fresh process "
                     f"has {first[1]}): {len(aliases)} read under the names keras.applications gives them")
    last = model.layers[-1] if model.layers else None
    if (getattr(getattr(last, "activation", None), "__name__", "") == "softmax"
            and getattr(variant, "head_activation", None) != "softmax"):
        notes.append(f"the model's last layer {last.name!r} applies a softmax: its output, compared as the "
                     f"'logits' tap, holds probabilities, where {variant.name}'s logits have none "
                     "(keras.applications: build it with classifier_activation=None to compare logits)")
    return notes


def model_params(variant: Variant, model) -> dict[str, np.ndarray]:
    return export_params(variant, model)


def model_runner(variant: Variant, model):
    def run_it(x, taps):
        try:
            return run(variant, model, x, taps)
        except ValueError as e:  # a layer named otherwise than keras.applications names it
            raise EquivError(f"Keras model {model.name}: its taps cannot be read as {variant.name}'s ({e})") from None

    h, w = tuple(model.inputs[0].shape)[1:3]
    return run_it, None, ((h, w) if h and w else None)


def versions() -> dict[str, str]:
    backend = keras.backend.backend()
    return {"keras": keras.__version__, "backend": backend,
            backend: getattr(importlib.import_module(backend), "__version__", "?")}


def engine() -> str:
    """Keras multiplies matrices in its backend's library (TensorFlow's is slim's too)."""
    return keras.backend.backend()


def thread_pools() -> list[dict]:
    """Thread pools of its own beyond the BLAS and OpenMP ones threadpoolctl sees: none told here."""
    return []


def device_name(device: str) -> str | None:
    """None: Keras names no accelerator through a backend-neutral API (bench records the device asked)."""
    return None


# ---------------------------------------------------------------------------------------
# Files: Keras 3 `.weights.h5`, as `model.save_weights` writes it


def write_file(variant: Variant, model, path) -> None:
    """Write `model`'s weights as Keras does (the path must end in .weights.h5)."""
    _variables(variant, model)
    model.save_weights(str(path))


def read_file(variant: Variant, path) -> dict[str, np.ndarray]:
    """Canonical parameters from a `.weights.h5` file of `variant`.

    The file addresses layers by class and order (`layers/conv2d_3/vars/0`), not by name, so
    it is read into `build(variant)` by Keras itself. When the file does not fit, the same
    addressing is followed by hand to say which canonical parameter is missing or misshaped.
    """
    from equiv import files

    arrays = files.check_hdf5(path, variant, keras2=False)  # nothing stored elsewhere, nothing too big
    model = build(variant)
    try:
        if len(arrays) != len(C.param_shapes(variant)):
            raise ValueError(f"holds {len(arrays)} arrays, {variant.name} has {len(C.param_shapes(variant))}")
        _explain_mismatch(variant, model, path)  # the shapes Keras would read, before it reads any data
        _load_weights_named(model, Path(path))
    except ValueError as e:
        _explain_mismatch(variant, model, path)  # raises ParamMismatchError when it can say more
        why = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:500]  # Keras' reason too
        raise FrameworkError(f"{path}: not the weights of {variant.name}: {why}") from None
    return export_params(variant, model)


def _load_weights_named(model, path: Path) -> None:
    """model.load_weights, which reads a file only under a `.weights.h5` name: a file told by its
    content (any name) is read through a link of that name in a private folder."""
    if path.name.endswith(".weights.h5"):
        model.load_weights(str(path))
        return
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "model.weights.h5"
        link.symlink_to(path.resolve())
        model.load_weights(str(link))


def _snake(name: str) -> str:
    """Keras' group name for a layer class: Conv2D -> conv2d, BatchNormalization -> batch_normalization."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _explain_mismatch(variant: Variant, model, path) -> None:
    """Follow Keras 3's layout (one group per layer, named by class and a per-class counter in
    model order; one `vars/i` per weight; a nested model's layers under its own group's `layers`,
    counted afresh, as keras-hub's classifier holds its backbone) and raise ParamMismatchError in
    canonical names."""
    import h5py

    to_canonical = {k: c for c, k in framework_names(variant).items()}
    params: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        groups = f.get("layers")
        if groups is None:
            return
        _walk_layers(model.layers, groups, to_canonical, params, "layers")
    C.check_params(variant, params, source=str(path))


def _walk_layers(layers, groups, to_canonical: dict, params: dict, where: str) -> None:
    """The shapes of one level of Keras 3's layout into `params` (canonical name -> zeros); a group
    of this level that no layer takes is named by its path in the file, as unexpected."""
    counters: dict[str, int] = {}
    used = set()
    for layer in layers:
        key = _snake(type(layer).__name__)
        n = counters.get(key, 0)
        counters[key] = n + 1
        name = key if n == 0 else f"{key}_{n}"
        group = groups.get(name)
        if group is None:
            continue
        used.add(name)
        if getattr(layer, "layers", None) and "layers" in group:  # a nested model: its own level
            _walk_layers(layer.layers, group["layers"], to_canonical, params, f"{where}/{name}/layers")
            continue
        if not layer.weights or "vars" not in group:
            continue
        for i, w in enumerate(layer.weights):
            canonical = to_canonical.get(f"{layer.name}/{w.path.rsplit('/', 1)[-1]}")
            if canonical is not None and str(i) in group["vars"]:
                params[canonical] = np.zeros(group["vars"][str(i)].shape, np.float32)  # shapes suffice
    for g in groups:
        if g not in used and "vars" in groups[g] and len(groups[g]["vars"]):
            params[f"{where}/{g}"] = np.zeros(0, np.float32)  # reported as unexpected, by the file's own name


# ---------------------------------------------------------------------------------------
# Benchmarks


def _require_device(device: str) -> None:
    """Keras places work on the backend's default device: refuse CUDA when it has none."""
    if device == "cpu":
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        found = bool(tf.config.list_physical_devices("GPU"))
    elif backend == "torch":
        import torch

        found = torch.cuda.is_available()
    elif backend == "jax":
        import jax

        found = any(d.platform == "gpu" for d in jax.devices())
    else:
        found = False
    if not found:
        raise FrameworkError(f"no CUDA device for Keras' {backend} backend")


# Documented fast paths `equiv bench --best` tries, each checked against the plain path.
FAST_PATHS = {"xla": {"xla": True}}


def forward_fn(variant: Variant, model, x: np.ndarray, *, device: str = "cpu",
               dtype: str = "float32", channels_last: bool = False, xla: bool = False):
    """A callable running one forward pass and returning the logits, through Keras' own
    compiled predict step (predict_on_batch); `xla` compiles it with XLA (jit_compile)."""
    if dtype != "float32" or channels_last:
        raise FrameworkError("the Keras benchmark runs float32 NHWC (Keras' own layout)")
    _require_device(device)
    x = np.asarray(x, np.float32)
    if xla:  # compile a copy: the caller's model stays plain
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        clone.compile(jit_compile=True)
        model = clone
    return lambda: model.predict_on_batch(x)


def matmul_fn(n: int, *, device: str = "cpu", dtype: str = "float32"):
    """A callable multiplying two n x n matrices with keras.ops on the current backend."""
    _require_device(device)
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.standard_normal((n, n)).astype(dtype))
    b = keras.ops.convert_to_tensor(rng.standard_normal((n, n)).astype(dtype))
    return lambda: keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])
