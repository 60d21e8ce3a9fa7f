"""Keras 3 adapter: keras.applications ResNets, and a functional builder for any variant.

Every model, the reference and the generic one alike, uses keras.applications' layer names
(`conv1_conv`, `conv2_block1_0_conv`, `conv3_block2_preact_bn`, `post_bn`, `predictions`), so
one renaming table serves both, and taps are found by layer name. Keras stores kernels HWIO
and dense kernels (in, out), as the canonical form does: no parameter is transposed.

No backend API is called, only Keras' own, so it runs on any Keras backend (seen with
TensorFlow, PyTorch and JAX).
"""

from __future__ import annotations

import importlib
import re
import tempfile
import weakref
from pathlib import Path

import numpy as np

from equiv import canonical as C
from equiv.errors import EquivError, FrameworkError, ParamMismatchError
from equiv.variants import Variant

try:
    import keras  # the real package: absolute import, not this module
except Exception as error:  # not installed, or its backend fails to import: available() says so
    keras = None
    _IMPORT_ERROR = f"keras does not import: {type(error).__name__}: {error}"



def available() -> str | None:
    return None if keras is not None else _IMPORT_ERROR


# ---------------------------------------------------------------------------------------
# Names: canonical layer -> Keras layer. {s} is Keras' stage number, the canonical one + 1
# (Keras counts the stem as conv1).

_LAYERS = (
    (r"stem/conv", "conv1_conv"),
    (r"stem/conv/bn", "conv1_bn"),
    (r"stage(?P<s>\d+)/unit(?P<u>\d+)/preact", "conv{s}_block{u}_preact_bn"),
    (r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut", "conv{s}_block{u}_0_conv"),
    (r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut/bn", "conv{s}_block{u}_0_bn"),
    (r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)", "conv{s}_block{u}_{k}_conv"),
    (r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)/bn", "conv{s}_block{u}_{k}_bn"),
    (r"post", "post_bn"),
    (r"logits", "predictions"),
)


def keras_layer(layer: str) -> str:
    """Keras layer name of a canonical layer: 'stage1/unit2/conv3/bn' -> 'conv2_block2_3_bn'."""
    for pattern, name in _LAYERS:
        m = re.fullmatch(pattern, layer)
        if m:
            groups = m.groupdict()
            if "s" in groups:
                groups["s"] = int(groups["s"]) + 1
            return name.format(**groups)
    raise ValueError(f"no Keras layer for canonical layer {layer!r}")


def framework_names(variant: Variant) -> dict[str, str]:
    """Canonical name -> Keras variable path ('conv2_block1_1_conv/kernel').

    Only the layer is renamed: kernel, bias and the BatchNorm fields are Keras' own names.
    """
    names = {}
    for name in C.param_shapes(variant):
        layer, field = name.rsplit("/", 1)
        names[name] = f"{keras_layer(layer)}/{field}"
    return names


_AUTO_NAME = re.compile(r"(conv2d|batch_normalization|dense)(?:_(\d+))?")


def keras2_layer_names(variant: Variant, layer_names) -> dict[str, str]:
    """File layer name -> this adapter's layer name, for a Keras 2 `.h5` file.

    keras.applications names every layer, so its files need nothing. The seed's model names
    none: Keras 2 called them by class and a per-session counter (`conv2d_7`), so within each
    class the counter gives the order in which the seed's code created them, which
    `equiv.seed.keras_resnet_v2.keras2_layer_order` lists. A class whose count does not fit is
    left unmapped, for the strict check to report by the file's own names."""
    if not _is_seed(variant):
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


def _unit_prefix(unit: C.Unit) -> str:
    return f"conv{unit.stage + 1}_block{unit.index}"


def _conv_outputs(c: C.Conv) -> tuple[str, ...]:
    """The Keras layers that may end a conv, last first: its ReLU, its BatchNorm, the conv
    itself (which holds the ReLU where the activation is fused, as in the seed's model)."""
    base = keras_layer(c.name).removesuffix("_conv")
    return (base + "_relu",) * c.relu + (base + "_bn",) * c.norm + (base + "_conv",)


def _tap_layers(v: Variant) -> dict[str, tuple[str, ...]]:
    """Canonical tap -> the Keras layers whose output it may be, the first found in a model
    wins. The shortcut is special-cased in `_tap_model`: the input of the unit's add that is
    not the branch (a projection, a 1x1 max-pool, or the unit's input itself)."""
    taps = {"stem/conv": _conv_outputs(C.stem(v)), "stem/pool": ("pool1_pool",)}
    for unit in C.units(v):
        p = _unit_prefix(unit)
        if v.preact:
            taps[f"{unit.name}/preact"] = (f"{p}_preact_relu", f"{p}_preact_bn")
        for c in unit.convs:
            taps[c.name] = _conv_outputs(c)
        taps[unit.name] = (f"{p}_out",)
    if v.preact:
        taps["post"] = ("post_relu",)
    taps["pool"] = ("avg_pool",)
    taps[C.output_tap(v)] = ("probs", "predictions")
    return taps


# ---------------------------------------------------------------------------------------
# Building


def _is_seed(v: Variant) -> bool:
    """The seed's own Keras network computes `v` (any head size)."""
    return v.built_by() == "equiv.seed.keras_resnet_v2"


def _reference_builder(v: Variant):
    """The keras.applications function that computes `v`, or FrameworkError saying why none does."""
    if v.native != "keras" or not v.reference.startswith("keras.applications."):
        raise FrameworkError(f"{v.name} has no keras.applications reference")
    changed = v.reference_differences()
    if changed:
        raise FrameworkError(f"{v.name} differs from {v.reference} in {', '.join(changed)}; "
                             "build it with reference=False")
    return getattr(keras.applications, v.reference.rsplit(".", 1)[1])


def build(variant: Variant, *, reference: bool | None = None):
    """keras.applications' model for keras/ variants, the seed's own model (equiv.seed) for
    seed/keras_resnet_v2_50, else the generic functional model.

    They take any input size and batch (a (None, None, C) input), except where a flattened
    head fixes the size, and output logits (probabilities after a softmax head).
    """
    if keras is None:
        raise FrameworkError(_IMPORT_ERROR)
    if reference is None:
        # a changed keras.applications description is refused below, by name; a changed seed one is generic
        reference = variant.native == "keras" and bool(variant.built_by()
                                                        or variant.reference.startswith("keras.applications."))
    if reference and _is_seed(variant):
        from equiv.seed import keras_resnet_v2

        return keras_resnet_v2.build(variant)
    if not reference:
        return _generic(variant)
    builder = _reference_builder(variant)
    # keras.applications insists on a static 224x224 input_shape with the top; an input
    # tensor of free size is taken as it is, and the layer names stay the same.
    return builder(weights=None, include_top=True, classes=variant.num_classes,
                   classifier_activation=None,
                   input_tensor=keras.Input(shape=(None, None, variant.in_channels)))


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


def _padding(rule: str, kernel: int, stride: int, x, name: str, pad_layer=None):
    """Realise a padding rule before a conv or pool: (x, Keras padding argument)."""
    if rule == "tf_same":
        return x, "same"  # Keras' "same" is TensorFlow's SAME on every backend
    # "symmetric" pads by the kernel alone; "valid" not at all. The size does not matter.
    before, after = C.pad_amounts(rule, 0, kernel, stride)
    if before or after:
        pad_layer = pad_layer or keras.layers.ZeroPadding2D
        x = pad_layer(((before, after), (before, after)), name=name)(x)
    return x, "valid"


def _conv(v: Variant, x, c: C.Conv):
    name = keras_layer(c.name)
    base = name.removesuffix("_conv")
    x, padding = _padding(c.padding, c.kernel, c.stride, x, f"{base}_pad")
    x = keras.layers.Conv2D(c.cout, c.kernel, strides=c.stride, padding=padding,
                            use_bias=c.bias, name=name)(x)
    if c.norm:
        x = keras.layers.BatchNormalization(epsilon=v.bn_epsilon, scale=v.bn_scale,
                                            name=keras_layer(f"{c.name}/bn"))(x)
    if c.relu:
        x = keras.layers.Activation("relu", name=f"{base}_relu")(x)
    return x


def _unit(v: Variant, x, unit: C.Unit):
    p = _unit_prefix(unit)
    branch = identity = x
    if v.preact:
        branch = keras.layers.BatchNormalization(epsilon=v.bn_epsilon, scale=v.bn_scale,
                                                 name=f"{p}_preact_bn")(x)
        if v.preact_relu:
            branch = keras.layers.Activation("relu", name=f"{p}_preact_relu")(branch)
        if v.identity_from == "preact":
            identity = branch
    if unit.shortcut:
        shortcut = _conv(v, branch if v.preact else x, unit.shortcut)  # v2 projects the pre-activation
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


def _generic(v: Variant):
    inputs = keras.Input(shape=(*(v.input_size or (None, None)), v.in_channels))
    x = _conv(v, inputs, C.stem(v))
    pad_layer = NegInfPadding2D if v.pool_pad_value == "-inf" else keras.layers.ZeroPadding2D
    x, padding = _padding(v.pool_padding, v.pool_kernel, v.pool_stride, x, "pool1_pad", pad_layer)
    x = keras.layers.MaxPooling2D(v.pool_kernel, strides=v.pool_stride, padding=padding,
                                  name="pool1_pool")(x)
    for unit in C.units(v):
        x = _unit(v, x, unit)
    if v.preact:
        x = keras.layers.BatchNormalization(epsilon=v.bn_epsilon, scale=v.bn_scale, name="post_bn")(x)
        x = keras.layers.Activation("relu", name="post_relu")(x)
    if v.head_pool:  # average pool, then flatten in NHWC order (the canonical kernel's rows)
        x = keras.layers.AveragePooling2D(v.head_pool, strides=v.head_pool_stride, name="avg_pool_pool")(x)
        x = keras.layers.Flatten(name="avg_pool")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dense(v.num_classes, name="predictions")(x)
    if v.head_activation == "softmax":
        x = keras.layers.Activation("softmax", name="probs")(x)
    return keras.Model(inputs, x, name=re.sub(r"\W", "_", v.name))


# ---------------------------------------------------------------------------------------
# Parameters


def _variables(v: Variant, model) -> dict[str, object]:
    """Canonical name -> the model's variable; ParamMismatchError if the model is not `v`'s."""
    by_path = {w.path: w for w in model.weights}
    names = framework_names(v)
    missing = [n for n, path in names.items() if path not in by_path]
    unexpected = sorted(set(by_path) - set(names.values()))
    mismatched = [(n, shape, tuple(by_path[names[n]].shape))
                  for n, shape in C.param_shapes(v).items()
                  if names[n] in by_path and tuple(by_path[names[n]].shape) != shape]
    if missing or unexpected or mismatched:
        raise ParamMismatchError(v.name, missing, unexpected, mismatched, source=f"Keras model {model.name}")
    return {n: by_path[path] for n, path in names.items()}


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
        present = {layer.name for layer in model.layers}
        outputs = {}
        for tap, candidates in _tap_layers(v).items():
            found = [name for name in candidates if name in present]
            if not found:
                raise FrameworkError(f"model {model.name} has none of the layers {candidates} for tap {tap}")
            outputs[tap] = model.get_layer(found[0]).output
        for unit in C.units(v):  # the add's input that is not the branch
            add = model.get_layer(f"{_unit_prefix(unit)}_out" if v.preact else f"{_unit_prefix(unit)}_add")
            branch = outputs[unit.convs[-1].name]
            outputs[f"{unit.name}/shortcut"] = next(t for t in add.input if t is not branch)
        outputs = {t: outputs[t] for t in C.tap_names(v)}
        tapper = keras.Model(model.inputs[0], outputs)
        _TAP_MODELS[model] = tapper
    return tapper


def run(variant: Variant, model, x, taps=None) -> dict[str, np.ndarray]:
    names = C.resolve_taps(variant, taps)
    out = _tap_model(variant, model)(np.asarray(x, dtype=np.float32), training=False)
    return {t: np.asarray(keras.ops.convert_to_numpy(out[t]), dtype=np.float32) for t in names}


def release(model) -> None:
    """Nothing to close: a Keras model is freed with its last reference (the tap model is weak-keyed)."""


# ---------------------------------------------------------------------------------------
# A user's Keras model, and the environment

NAMING = ("a Keras model is read by layer name, as keras.applications names its layers "
          "(equiv.frameworks.keras.framework_names(variant) lists them)")


def owns(obj) -> bool:
    return keras is not None and isinstance(obj, keras.Model)


def model_names(model) -> set[str]:
    return {w.path for w in model.weights}


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
    model order; one `vars/i` per weight) and raise ParamMismatchError in canonical names."""
    import h5py

    to_canonical = {k: c for c, k in framework_names(variant).items()}
    params, counters, used = {}, {}, set()
    with h5py.File(path, "r") as f:
        groups = f.get("layers")
        if groups is None:
            return
        for layer in model.layers:
            key = _snake(type(layer).__name__)
            n = counters.get(key, 0)
            counters[key] = n + 1
            group = groups.get(key if n == 0 else f"{key}_{n}")
            if not layer.weights or group is None or "vars" not in group:
                continue
            used.add(group.name)
            for i, w in enumerate(layer.weights):
                name = to_canonical.get(f"{layer.name}/{w.path.rsplit('/', 1)[-1]}")
                if name is not None and str(i) in group["vars"]:
                    params[name] = np.zeros(group["vars"][str(i)].shape, np.float32)  # shapes suffice
        extra = [g for g in groups if groups[g].name not in used and "vars" in groups[g] and len(groups[g]["vars"])]
    for g in extra:
        params[f"layers/{g}"] = np.zeros(0, np.float32)  # reported as unexpected, by the file's own name
    C.check_params(variant, params, source=str(path))


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
