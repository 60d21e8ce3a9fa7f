"""Weight files: detect a format, read it into canonical parameters, write canonical ones out.

Formats (read and written unless said):

    tf-checkpoint   a tf.compat.v1.train.Saver checkpoint with tf_slim.nets' variable names
                    (path = the prefix, e.g. model.ckpt for model.ckpt.index + .data-*);
                    TF2 object checkpoints of a Keras model are read too, matched by layer
                    position in the model as equiv builds it (written: Saver format only)
    keras-weights   Keras 3 `.weights.h5`, as `model.save_weights` writes it
    keras-archive   Keras 3 `.keras` (read only): its weights are read; its config, which could
                    name code to run, is never deserialised
    keras2-h5       legacy Keras 2 `.h5`, a whole model or weights (read only), by layer name
    torch           a PyTorch state_dict (`.pt`, `.pth`), read with weights_only=True; a file that
                    needs real unpickling (a whole pickled nn.Module) only with allow_pickle=True
    safetensors     canonical names and layout, no framework needed

Each read touches only the framework that owns the format; safetensors touches none. Files
come from strangers: a read gives strictly checked, finite float32 arrays or an EquivError that
names the file. Every write is atomic (equiv.atomic): staged beside the target, fsynced, renamed.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from equiv import atomic, formats, hdf5, limits, paths, tf_index
from equiv import canonical as C
from equiv.errors import EquivError, NonFiniteError, ParamMismatchError
from equiv.variants import Variant


def detect(path: str | os.PathLike, fmt: str | None = None, *, reading: bool = True) -> str:
    """The format of `path`: `fmt` if given (checked), else from the name, else the content."""
    path = Path(path)
    if fmt is not None:
        return formats.get(fmt).name
    found = formats.by_name(path)
    if reading and (found is None or path.name.lower().endswith(".h5")):
        found = formats.by_content(path) or found
    if found is None:
        raise EquivError(f"{path}: cannot tell its format from the name"
                         f"{' or the content' if reading else ''}; pass a format ({', '.join(formats.NAMES)})")
    return found


def read(path: str | os.PathLike, variant: Variant, fmt: str | None = None, *, allow_pickle: bool = False,
         classes: Mapping[str, type] | None = None, unfold_bn: bool = False,
         lazy: bool = False) -> dict[str, np.ndarray]:
    """Canonical parameters of `variant` from a weight file (strictly checked, finite).

    Files come from strangers: whatever a framework's reader raises on a damaged file becomes
    an EquivError that names the file, the format and the reader's own first line.
    `allow_pickle` and `classes` concern torch files only (see frameworks.torch.load_state);
    `unfold_bn` exported ONNX graphs only (see frameworks.onnx_export.file_params).
    `lazy=True`: a format whose reader can read one tensor at a time (a slim checkpoint) gives a
    `Lazy` mapping, its names, shapes and dtypes checked now and each array read (and checked
    finite) when it is taken; other formats give their dict as ever."""
    path = Path(path)
    paths.check_input(path, fmt)  # a regular file (never a FIFO that would hang the reader), before detect opens it
    fmt = detect(path, fmt)
    try:
        params = _read(path, variant, fmt, allow_pickle, classes, unfold_bn, lazy)
    except EquivError as e:
        if str(paths.tf_prefix(path) if fmt == "tf-checkpoint" else path) not in str(e):  # name the file
            if isinstance(e, ParamMismatchError):
                e.relabel(source=str(path))
            else:
                e.args = (f"{path}: {e}",)
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a problem of this file
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise EquivError(f"{path}: cannot be read as {fmt} ({type(e).__name__}: {first})") from None
    if isinstance(params, Lazy):
        params.source, params.fmt = str(path), fmt  # each array is checked when it is read
        return params
    check_finite(params, str(path))
    return params


class Lazy(Mapping):
    """Canonical parameters read one at a time (`files.read(..., lazy=True)`): names and shapes known
    up front (`shapes`), each array read when it is taken, checked finite (NonFiniteError naming the
    file and the parameter) and not kept. `del` forgets a name (a writer that consumes its params).

    A port holds then the largest tensor of the source at a time, not all of them: TensorFlow keeps
    the memory of every tensor its reader gave out in its own pool (oneDNN's allocator), so arrays
    dropped after conversion are reused by the next read instead of the whole source staying resident."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], load, source: str = "", fmt: str = ""):
        self.shapes = dict(shapes)
        self._load, self.source, self.fmt = load, source, fmt

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.shapes:
            raise KeyError(name)
        try:
            a = self._load(name)
        except EquivError:
            raise
        except Exception as e:  # noqa: BLE001 - as files.read: a damaged file's reader failure names the file
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise EquivError(f"{self.source}: cannot be read as {self.fmt} ({type(e).__name__}: {first})") from None
        found = nonfinite(a)
        if found:
            raise NonFiniteError(f"{self.source}: parameter {name} holds NaN or Inf ({found})")
        return a

    def __contains__(self, name) -> bool:  # without reading the array
        return name in self.shapes

    def __delitem__(self, name: str) -> None:
        del self.shapes[name]

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def nonfinite(a: np.ndarray) -> str | None:
    """None when `a` is all finite, else how many NaN and Inf it holds and where the first is.

    A floating array is summed first, in one pass with no temporary: a NaN or an Inf anywhere makes
    the sum NaN or Inf, so a finite sum proves every value finite (a 400 MB kernel is not copied
    into a boolean mask of its size); only a sum that is not finite (a NaN, an Inf, or finite values
    whose float sum overflows) is looked at value by value."""
    if a.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.add.reduce(a, axis=None)):
                return None
    finite = np.isfinite(a)
    if finite.all():
        return None
    n_nan = int(np.isnan(a).sum())
    where = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), np.shape(a)))
    return f"{n_nan} NaN, {a.size - int(finite.sum()) - n_nan} Inf of {a.size} values; first at {where}"


def check_finite(params: Mapping[str, np.ndarray], source: str) -> None:
    """NonFiniteError naming the first parameter that holds NaN or Inf, with the counts."""
    for name, a in params.items():
        found = nonfinite(np.asarray(a))
        if found:
            raise NonFiniteError(f"{source}: parameter {name} holds NaN or Inf ({found})")


def _read(path: Path, variant: Variant, fmt: str, allow_pickle: bool,
          classes: Mapping[str, type] | None, unfold_bn: bool = False,
          lazy: bool = False) -> dict[str, np.ndarray]:
    reader = formats.get(fmt).read()
    options = {"unfold_bn": True} if unfold_bn and _takes(reader, "unfold_bn") else {}  # others never see it
    if lazy:
        options["lazy"] = True  # a reader that cannot read lazily ignores it (**_)
    return reader(variant, path, allow_pickle=allow_pickle, classes=classes, **options)


def _takes(fn, name: str) -> bool:
    import inspect

    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def read_tf_checkpoint(variant: Variant, path: Path, *, lazy: bool = False, **_) -> dict[str, np.ndarray]:
    """A Saver checkpoint in slim's names, or a TF2 object checkpoint of a Keras model; its index
    checked (equiv.tf_index) before TensorFlow opens it."""
    prefix = paths.tf_prefix(path)
    if not Path(f"{prefix}.index").exists():
        raise EquivError(f"{path}: no TF checkpoint here (expected {prefix}.index)")
    entries = checkpoint_entries(str(prefix), variant)
    if tf_index.OBJECT_GRAPH in entries:
        return _read_object_checkpoint(str(prefix), variant, entries)
    from equiv.frameworks import module

    # slim's names, read by equiv.tf_reader: TensorFlow is imported only for a tensor it does not take
    return module("slim").read_file(variant, str(prefix), lazy=lazy, entries=entries)


def read_keras_weights(variant: Variant, path: Path, **_) -> dict[str, np.ndarray]:
    """With h5py alone where the file is laid out as `variant`'s Keras model (equiv.keras_h5), else
    read into that model by Keras, which says what does not fit."""
    from equiv import keras_h5
    from equiv.frameworks import adapter

    declared = check_hdf5(path, variant, keras2=False)  # before Keras and TensorFlow are imported
    params = keras_h5.read(variant, path, declared)
    return params if params is not None else adapter("keras").read_file(variant, path)


_OBJECT_KEY = re.compile(r"(?:[^/]+/)*_operations/(\d+)/(\w+)/\.ATTRIBUTES/VARIABLE_VALUE")


def checkpoint_entries(prefix: str, variant: Variant) -> dict[str, tf_index.Entry]:
    """The tensors a TF checkpoint declares, checked (tf_index) before TensorFlow opens it, none
    bigger than a parameter equiv could need. Optimizer slots may be there: sizes are checked per
    tensor, and only parameters that fit by name and shape are read."""
    entries = tf_index.read(prefix)
    # the variant's own largest first: every registered variant's shapes (0.1 s) only for a bigger entry
    own = max((math.prod(s) for s in C.param_shapes(variant).values()), default=0)
    for name, e in entries.items():
        n = limits.elements(prefix, name, e.shape)
        if n <= own or e.dtype == tf_index.STRING:  # the object graph: its size is checked, not its shape
            continue
        biggest = limits.largest_tensor(variant)
        if n > biggest:
            raise EquivError(f"{prefix}: {name} declares {n} elements ({e.shape}); no parameter of {variant.name} "
                             f"or any registered variant has more than {biggest}")
    return entries


def _read_object_checkpoint(prefix: str, variant: Variant, entries: Mapping[str, tf_index.Entry]) -> dict:
    """A TF2 object checkpoint of a Keras model (`tf.train.Checkpoint(model=model)`).

    Its variables are named by the position of their layer in the model's operations
    (`model/_operations/12/_kernel/...`), not by layer name. They are matched to the layers of
    the same model as equiv builds it in Keras (keras.applications for keras/ variants), then
    checked strictly by shape (from the index, before any tensor is read); a checkpoint of a
    model built another way does not match."""
    from equiv import tf_reader
    from equiv.frameworks import adapter

    ad = adapter("keras")
    ops = ad.build(variant).operations
    to_canonical = {k: c for c, k in ad.framework_names(variant).items()}
    keys: dict[str, str] = {}  # canonical (or the file's own) name -> checkpoint key
    for key in entries:
        m = _OBJECT_KEY.fullmatch(key)
        if m is None:
            continue  # the object graph, optimizer slots, counters
        i, field = int(m.group(1)), m.group(2).lstrip("_")  # Keras 3 keeps a conv kernel as `_kernel`
        name = f"{ops[i].name}/{field}" if i < len(ops) else key
        keys[to_canonical.get(name, name)] = key
    C.check_shapes(variant, {n: entries[k].shape for n, k in keys.items()}, source=prefix)
    for n, k in keys.items():
        if not entries[k].floating:
            limits.refuse_dtype(prefix, n, f"{entries[k].dtype_name()} (as {k})")
    get = tf_reader.reader(prefix, entries)
    return {n: np.asarray(get(keys[n]), np.float32) for n in C.param_shapes(variant)}


def check_hdf5(path: Path, variant: Variant, *, keras2: bool, source: str | None = None) -> list[hdf5.Declared]:
    """The datasets of an HDF5 weight file: nothing stored elsewhere, nothing bigger than equiv
    could need (equiv.hdf5, equiv.limits); no data read."""
    import h5py

    source = source or str(path)
    with h5py.File(path, "r") as f:
        found = hdf5.walk(hdf5.weights_root(f, keras2, source), source)
    limits.check_declared(source, variant, hdf5.declared_sizes(found))
    return found


def read_keras_archive(variant: Variant, path: Path, **_) -> dict[str, np.ndarray]:
    """The weights of a `.keras` zip, read as a `.weights.h5`: nothing of its config is run."""
    import zipfile

    from equiv.frameworks import adapter

    try:
        with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory() as tmp:
            # the uncompressed size the archive declares, before inflating anything (a deflate bomb)
            limits.check_bytes(str(path), z.getinfo("model.weights.h5").file_size, variant,
                               "its model.weights.h5 unpacks to")
            target = Path(tmp) / "model.weights.h5"
            with z.open("model.weights.h5") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            try:
                check_hdf5(target, variant, keras2=False)
                return adapter("keras").read_file(variant, target)
            except ParamMismatchError as e:
                raise e.relabel(source=str(path)) from None
            except EquivError as e:
                raise EquivError(f"{path}: {str(e).replace(str(target), 'its model.weights.h5')}") from None
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise EquivError(f"{path}: not a readable .keras archive ({e})") from None


def keras_shapes(path: str | os.PathLike, fmt: str) -> list[tuple[int, ...]] | None:
    """The shapes of the arrays in a file of a Keras model, sorted; None for other files.

    Keras keeps kernels HWIO and dense kernels (in, out), as the canonical form does, so a file
    whose sorted shapes equal a variant's sorted canonical shapes holds that variant's weights
    (equiv.porting.looks_like), whatever its layer names or order. Reads shapes only: with h5py
    (.weights.h5, .keras, Keras 2 .h5), or a TF2 object checkpoint's index (equiv.tf_index)."""
    import zipfile

    if fmt == "tf-checkpoint":
        entries = tf_index.read(str(paths.tf_prefix(Path(path))))
        if tf_index.OBJECT_GRAPH not in entries:
            return None
        return sorted(e.shape for k, e in entries.items() if _OBJECT_KEY.fullmatch(k))
    if fmt not in ("keras-weights", "keras-archive", "keras2-h5"):
        return None
    import h5py

    def shapes(f, source: str) -> list[tuple[int, ...]]:
        found = hdf5.walk(hdf5.weights_root(f, fmt == "keras2-h5", source), source)
        if fmt != "keras2-h5" and any(d.name.startswith("/layers/") for d in found):
            found = [d for d in found if d.name.startswith("/layers/")]
        return sorted(d.shape for d in found)

    if fmt == "keras-archive":
        with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as inner, h5py.File(inner, "r") as f:
            return shapes(f, f"{path} (its model.weights.h5)")
    with h5py.File(path, "r") as f:
        return shapes(f, str(path))


def declared_shapes(path: str | os.PathLike, fmt: str) -> dict[str, tuple[int, ...]]:
    """The names and shapes a file of format `fmt` declares (a safetensors header, a TF checkpoint's
    index), checked, no data read: the format's record says how (`equiv.formats.Format.declared`)."""
    return formats.get(fmt).declared_shapes(Path(path))


def read_keras2_h5(variant: Variant, path: Path, **_) -> dict[str, np.ndarray]:
    """A Keras 2 `.h5` (whole model or weights only): arrays addressed by layer and weight name."""
    import h5py

    check_hdf5(path, variant, keras2=True)  # before Keras and TensorFlow are imported

    from equiv.frameworks import adapter

    ad = adapter("keras")
    to_canonical = {k: c for c, k in ad.framework_names(variant).items()}
    params: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            root = hdf5.weights_root(f, True, str(path))  # checked by check_hdf5 (files.read) before
            layers = [n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]]
            rename = ad.keras2_layer_names(variant, layers)  # the seed's auto-named layers, by order
            datasets = {}  # canonical name -> dataset, read only once every shape fits
            for layer in layers:
                group = _child(root, layer, path)
                for wname in group.attrs.get("weight_names", []):
                    wname = wname.decode() if isinstance(wname, bytes) else wname
                    field = wname.rsplit("/", 1)[-1].split(":")[0]  # 'conv1_conv/kernel:0' -> kernel
                    key = f"{rename.get(layer, layer)}/{field}"
                    datasets[to_canonical.get(key, key)] = _child(group, wname, path)
            C.check_shapes(variant, {k: d.shape for k, d in datasets.items()}, source=str(path))  # no data yet
            params = {k: np.asarray(datasets[k][()], np.float32) for k in C.param_shapes(variant)}
    except (OSError, KeyError) as e:
        raise EquivError(f"{path}: not a readable Keras 2 .h5 file ({e})") from None
    return params


def _child(group, name: str, path: Path):
    """`group[name]` for a name from the file's own attributes: relative, so inside the checked tree."""
    import h5py

    if not name or name.startswith("/"):
        raise EquivError(f"{path}: {group.name}: names {name!r}, outside the weights")
    found = group[name]
    if not isinstance(found, (h5py.Group, h5py.Dataset)):
        raise EquivError(f"{path}: {group.name}/{name}: not a group or dataset")
    return found


def read_safetensors(variant: Variant, path: Path, **_) -> dict[str, np.ndarray]:
    """Header first (sizes against the file and the variant, names and shapes against the
    variant), then exactly the canonical tensors, with ordinary reads (no memory map)."""
    from equiv import safetensors_reader

    entries = safetensors_reader.header(path)
    if backend_named(variant):  # a library's own file (Hugging Face's model.safetensors): its names and layout
        entries = {n: e for n, e in entries.items() if not n.endswith(".num_batches_tracked")}
    limits.check_declared(str(path), variant, {n: (e.shape, e.itemsize) for n, e in entries.items()})
    backend = backend_named(variant)
    if backend:
        from equiv.frameworks import adapter

        wanted = set(adapter(backend).framework_names(variant).values())
        # the wanted tensors' data (sizes checked above); a zero-stride view of its shape stands for each
        # unexpected one, which the check names without reading it
        state = foreign_state(variant, {n: e.shape for n, e in entries.items() if n not in wanted})
        state.update(safetensors_reader.read(path, entries, [n for n in entries if n in wanted]))
        return adapter(backend).state_to_canonical(variant, state, str(path))
    C.check_shapes(variant, {n: e.shape for n, e in entries.items()}, source=str(path))
    return safetensors_reader.read(path, entries, list(C.param_shapes(variant)))


def backend_named(variant: Variant) -> str | None:
    """The backend whose names and layout a safetensors file of `variant` uses: that of its dialect
    where the library's own safetensors files hold its state_dict (transformers', timm's), else None
    (canonical names and layout)."""
    if not variant.dialect:
        return None
    from equiv import dialects

    s = dialects.spelling(variant, variant.dialect)
    return s.backend if s.safetensors else None


def foreign_state(variant: Variant, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Zero-stride stand-ins of names a library's file should not hold, a canonical name marked as
    such (a canonical safetensors file read as Hugging Face's is unexpected throughout, not a fit)."""
    canonical = C.param_shapes(variant)
    return {f"{n} (a canonical name)" if n in canonical else n: shape_only(s) for n, s in shapes.items()}


def shape_only(shape: tuple[int, ...]) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, (0,) * len(shape))


def check_target(path: str | os.PathLike, fmt: str, force: bool) -> None:
    """EquivError unless `path` (a TF checkpoint: its index and data) can be written: see equiv.paths."""
    paths.check_job(outputs=[("`target`", path, fmt)], force=force)


def write(params: Mapping[str, np.ndarray], path: str | os.PathLike, variant: Variant,
          fmt: str | None = None, *, force: bool = False, finite: bool = False, consume: bool = False) -> list[Path]:
    """Write canonical `params` of `variant` in `fmt`, atomically; returns the files written.

    `finite=True`: the caller has checked every value is finite (`read` does), so it is not
    scanned again. `consume=True`: `params` (a dict the caller gives up) may be emptied as it is
    written, so that a writer that converts each array drops the original as it goes (a torch
    state_dict: peak memory one copy of the weights plus the largest array, not two copies)."""
    path = Path(path)
    fmt = detect(path, fmt, reading=False)
    if fmt not in formats.WRITABLE:
        raise EquivError(f"{path}: {fmt} files are read only; write one of {', '.join(formats.WRITABLE)}")
    check_target(path, fmt, force)  # before any work; checked again when publishing
    if isinstance(params, Lazy):  # its shapes without reading it; each array is checked as it is read
        C.check_shapes(variant, params.shapes)
    else:
        C.check_params(variant, params)
    if not finite and not isinstance(params, Lazy):
        check_finite(params, f"{path} not written")
    with atomic.staging(path) as tmp:
        staged = tmp / path.name
        try:
            # a writer that streams its file start to end (torch.save) has it flushed behind it; one that
            # seeks back and rewrites (HDF5, TF's) would only have to read its pages back
            with atomic.writing_behind(tmp) if formats.get(fmt).from_params else contextlib.nullcontext():
                _write_staged(params, staged, variant, formats.get(fmt), consume)
        except (EquivError, OSError):
            raise  # atomic.staging names the target of an OSError
        except Exception as e:  # noqa: BLE001 - a framework's writer says a full disk its own way
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise EquivError(f"{path}: cannot be written ({type(e).__name__}: {first})") from None
        # A TF checkpoint's index goes last: a reader opens it first, so it never sees a half-moved pair.
        produced = sorted((p for p in tmp.iterdir() if p.name != "checkpoint"),
                          key=lambda p: p.name.endswith(".index"))
        folder = path.parent if str(path.parent) else Path(".")
        return atomic.publish([(p, folder / p.name) for p in produced], force)


def _write_staged(params: Mapping[str, np.ndarray], staged: Path, variant: Variant, fmt: formats.Format,
                  consume: bool = False) -> None:
    """`params` written to `staged` by the format's own writer: a backend's from its model, or from
    the params themselves where the format says so (`consume`: see `write`)."""
    from equiv.frameworks import adapter, loaded

    if fmt.owner is None or fmt.from_params:
        if fmt.owner is not None and not fmt.owner_on_demand:
            adapter(fmt.owner)  # a FrameworkError that says why the backend cannot be used here
        fmt.write()(variant, params, staged, **({"consume": True} if consume and fmt.from_params else {}))
        return

    with loaded(fmt.owner, variant, params) as model:
        fmt.write()(variant, model, staged)


def write_safetensors_state(variant: Variant, state: Mapping[str, np.ndarray], path: Path) -> None:
    """A library's own safetensors file: its state_dict `state` (names and layout), BatchNorm step counters
    added as a state_dict holds them (bookkeeping; readers drop them), and the files its loader needs
    beside it (equiv.dialects.companions), published with it."""
    from safetensors.numpy import save_file

    from equiv import dialects

    state = dict(state)
    state.update({k[: -len("running_mean")] + "num_batches_tracked": np.zeros((), np.int64)
                  for k in list(state) if k.endswith(".running_mean")})
    save_file(state, str(path), metadata={"format": "pt"})
    for name, text in dialects.companions(variant, path.name).items():
        (path.parent / name).write_text(text)


def write_state(state: Mapping[str, np.ndarray], path: str | os.PathLike, variant: Variant, fmt: str, *,
                force: bool = False, finite: bool = False) -> list[Path]:
    """Write a state in `variant`'s backend names and layout (what `read_state` gives) as `fmt`,
    atomically: a port between two files of one layout renames, never transposes. `finite`: the
    arrays are known finite (read_state checked them)."""
    path = Path(path)
    check_target(path, fmt, force)
    if not finite:
        check_finite(state, f"{path} not written")
    with atomic.staging(path) as tmp:
        staged = tmp / path.name
        if formats.get(fmt).owner is None:
            write_safetensors_state(variant, state, staged)
        else:
            from equiv.frameworks import adapter

            adapter(formats.get(fmt).owner).write_state_file(variant, state, staged)
        produced = sorted(tmp.iterdir(), key=lambda p: p.name.endswith(".index"))
        folder = path.parent if str(path.parent) else Path(".")
        return atomic.publish([(p, folder / p.name) for p in produced], force)


def backend_of(variant: Variant, fmt: str) -> str | None:
    """The backend whose names a file of `fmt` holds for `variant` (its format's owner, else the
    backend of `variant`'s dialect), no backend imported."""
    return formats.get(fmt).owner or backend_named(variant)


def layout_of(variant: Variant, fmt: str) -> str | None:
    """The backend whose names and layout a file of `fmt` holds for `variant` where it is a state_dict
    that the backend can rename without transposing (its adapter's `state_shapes`), else None."""
    from equiv.frameworks import module  # what the adapter has, not whether its framework imports

    backend = backend_of(variant, fmt)
    if backend is None or not hasattr(module(backend), "state_shapes") or (
            formats.get(fmt).owner and not hasattr(module(backend), "write_state_file")):
        return None
    return backend


def read_state(path: Path, variant: Variant, fmt: str, *, allow_pickle: bool = False,
               classes: Mapping[str, type] | None = None) -> dict[str, np.ndarray] | None:
    """A state_dict file in `variant`'s names and its backend's layout, read as it is (float32,
    finite), when it holds exactly the names and shapes expected; None otherwise (the full read
    then says what does not fit)."""
    from equiv.frameworks import adapter

    backend = layout_of(variant, fmt)
    ad = adapter(backend)
    expected = ad.state_shapes(variant)
    if formats.get(fmt).owner is None:
        from equiv import safetensors_reader

        entries = {n: e for n, e in safetensors_reader.header(path).items() if not n.endswith(".num_batches_tracked")}
        if {n: e.shape for n, e in entries.items()} != expected:
            return None
        limits.check_declared(str(path), variant, {n: (e.shape, e.itemsize) for n, e in entries.items()})
        state = safetensors_reader.read(path, entries, list(entries))
    else:
        state = {k: a for k, a in ad.load_state(path, allow_pickle=allow_pickle, classes=classes,
                                                variant=variant).items()
                 if not k.endswith(".num_batches_tracked")}
        if {k: tuple(a.shape) for k, a in state.items()} != expected:
            return None
        state = {k: np.asarray(a, np.float32) for k, a in state.items()}
    check_finite(state, str(path))
    return state


def write_safetensors(variant: Variant, params: Mapping[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    if backend_named(variant):  # the library's own names and layout (a state_dict, as save_pretrained)
        from equiv.frameworks import adapter

        write_safetensors_state(variant, adapter(backend_named(variant)).state_arrays(variant, params), path)
        return
    # One metadata key: safetensors writes them in hash order, which changes from process to
    # process, so two keys would give the same port different bytes each run.
    save_file({k: np.ascontiguousarray(params[k], np.float32) for k in C.param_shapes(variant)},
              str(path), metadata={"equiv_variant": variant.name})
