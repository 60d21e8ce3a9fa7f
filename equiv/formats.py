"""Weight-file formats as records: one line each in REGISTRY; every list of formats derives from it.

A record says what a format is (its suffixes, how its first bytes look), which backend owns it
(imported only when a file of it is read or written; None for safetensors, which needs none),
and where its reader and writer live, as "module:function" resolved on first use, so that
detecting a format imports no framework. Readers take (variant, path, **options) and return
canonical parameters; a backend's writer takes (variant, model, path) with the model built and
loaded by `equiv.files.write`, a framework-free one (variant, params, path).

To add a format: write its reader (and writer), then add its line below.
"""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Format:
    """* name: as on the command line (`--from-format`).
    * owner: the backend that reads and writes it, or None (no framework needed).
    * suffixes: file names it is told by (longest match wins across formats).
    * help: one line for `--help` and the README.
    * reader, writer: "module:function"; writer None for a read-only format. A writer takes
      (variant, the owner's model, path), or with `from_params` (and for every format without an
      owner) (variant, canonical params, path); `owner_on_demand`: that writer imports its owner
      only when it has to (a Keras 3 `.weights.h5` is written with h5py where its layout is known).
    * fit: "module:function": (path, format, **options) -> a function of a candidate variant that
      says whether the file fits it; the file read once (equiv.porting.looks_like).
    * sniff: (path, first 16 bytes) -> bool, for a file whose name says nothing, or its
      "module:function" (a new format's sniff can live in its own module); formats are
      sniffed in the registry's order (a safetensors header's length may begin with a pickle's
      0x80, so safetensors is asked before torch).
    * declared: see below."""

    name: str
    owner: str | None
    suffixes: tuple[str, ...]
    help: str
    reader: str
    writer: str | None
    fit: str
    sniff: Callable[[Path, bytes], bool] | str | None = None
    # "module:function": (path) -> {name: shape} the file declares apart from its data (a
    # header or an index), checked without reading a tensor; None when only the data says.
    declared: str | None = None
    from_params: bool = False
    # its from_params writer needs its owner only where it cannot do without (equiv.keras_h5 builds the
    # Keras model only for a network whose layout it cannot compute): the owner is not imported up front
    owner_on_demand: bool = False

    def declared_shapes(self, path: Path) -> dict[str, tuple[int, ...]]:
        from equiv.errors import EquivError

        if self.declared is None:
            raise EquivError(f"{path}: {self.name} files do not declare their shapes apart from their data")
        return _resolve(self.declared)(path)

    def read(self) -> Callable:
        return _resolve(self.reader)

    def write(self) -> Callable:
        return _resolve(self.writer)

    def fit_to(self) -> Callable:
        return _resolve(self.fit)

    def sniffs(self, path: Path, head: bytes) -> bool:
        if self.sniff is None:
            return False
        return (_resolve(self.sniff) if isinstance(self.sniff, str) else self.sniff)(path, head)


def _resolve(where: str) -> Callable:
    module, function = where.split(":")
    return getattr(importlib.import_module(module), function)


def _is_checkpoint(path: Path, head: bytes) -> bool:
    return Path(f"{path}.index").exists()


def _zip_names(path: Path) -> list[str] | None:
    """The members of a zip file, or None when it is damaged."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _is_keras_archive(path: Path, head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC) and "model.weights.h5" in (_zip_names(path) or ())


def _is_torch(path: Path, head: bytes) -> bool:
    """torch.save's zip archive (its pickle is `<archive>/data.pkl`), a damaged zip (torch's reader
    says why), or a legacy bare pickle. Another zip (an .npz, a Keras archive) is not claimed, so a
    zip-based format may sit anywhere in the registry."""
    if head.startswith(ZIP_MAGIC):
        names = _zip_names(path)
        return names is None or any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)
    return head.startswith(b"\x80")


def _hdf5_kind(path: Path) -> str | None:
    """Keras 2 files list their layers in a `layer_names` attribute; Keras 3 ones do not."""
    import h5py

    from equiv import hdf5

    try:
        with h5py.File(path, "r") as f:
            return "keras2-h5" if "layer_names" in hdf5.weights_root(f, True, str(path)).attrs else "keras-weights"
    except Exception:  # noqa: BLE001 - unreadable: the name decides, the reader says why
        return "keras-weights" if path.name.lower().endswith(".weights.h5") else "keras2-h5"


def _is_keras_weights(path: Path, head: bytes) -> bool:
    return head.startswith(HDF5_MAGIC) and _hdf5_kind(path) == "keras-weights"


def _is_keras2_h5(path: Path, head: bytes) -> bool:
    return head.startswith(HDF5_MAGIC) and _hdf5_kind(path) == "keras2-h5"


def _is_safetensors(path: Path, head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{"  # an 8-byte header length, then JSON


REGISTRY: dict[str, Format] = {f.name: f for f in (
    Format("tf-checkpoint", "slim", (".ckpt", ".index"),
           "tf.compat.v1.train.Saver checkpoint in tf_slim.nets' names (the prefix); TF2 object checkpoints "
           "of a Keras model read too", "equiv.files:read_tf_checkpoint", "equiv.frameworks.slim:write_file",
           "equiv.porting:fit_tf_checkpoint", _is_checkpoint, declared="equiv.tf_index:declared_shapes"),
    # read and written with h5py where the family lays out the model's layers (equiv.keras_h5), else by Keras
    Format("keras-weights", "keras", (".weights.h5",), "Keras 3 model.save_weights",
           "equiv.files:read_keras_weights", "equiv.keras_h5:write_file", "equiv.porting:fit_by_sorted_shapes",
           _is_keras_weights, from_params=True, owner_on_demand=True),
    Format("keras-archive", "keras", (".keras",), "Keras 3 .keras archive: its weights only, its config never run",
           "equiv.files:read_keras_archive", None, "equiv.porting:fit_by_sorted_shapes", _is_keras_archive),
    Format("keras2-h5", "keras", (), "legacy Keras 2 .h5, a whole model or weights, by layer name",
           "equiv.files:read_keras2_h5", None, "equiv.porting:fit_by_sorted_shapes", _is_keras2_h5),
    Format("safetensors", None, (".safetensors",), "canonical names and layout; no framework needed",
           "equiv.files:read_safetensors", "equiv.files:write_safetensors", "equiv.porting:fit_declared",
           _is_safetensors, declared="equiv.safetensors_reader:declared_shapes"),
    Format("onnx", "onnx", (".onnx",), "ONNX model: the initializers of a graph equiv wrote (canonical names); "
           "written as equiv's graph, every tap an output", "equiv.frameworks.onnx:read_file",
           "equiv.frameworks.onnx:write_file", "equiv.frameworks.onnx:fit_file",
           # a serialized ModelProto: field 1 (ir_version, a one-byte varint), then another of its fields
           lambda path, head: head[:1] == b"\x08" and len(head) > 2 and head[1] < 0x80
           and head[2] in b"\x12\x1a\x22\x2a\x32\x3a\x42"),
    Format("torch", "torch", (".pt", ".pth", ".pkl"),
           "a PyTorch state_dict, read with weights_only=True (a pickled model only with allow_pickle)",
           "equiv.frameworks.torch:read_file", "equiv.frameworks.torch:write_file", "equiv.porting:fit_state_dict",
           _is_torch, from_params=True),
)}
NAMES = tuple(REGISTRY)
WRITABLE = tuple(name for name, f in REGISTRY.items() if f.writer)


def get(name: str) -> Format:
    from equiv.errors import EquivError

    if name not in REGISTRY:
        raise EquivError(f"unknown format {name!r}; choose from {', '.join(NAMES)}")
    return REGISTRY[name]


def by_name(path: Path) -> str | None:
    """The format a file's name says (the longest matching suffix), or None."""
    name = path.name.lower()
    hits = [(len(s), f.name) for f in REGISTRY.values() for s in f.suffixes if name.endswith(s)]
    return max(hits)[1] if hits else None


def by_content(path: Path) -> str | None:
    """The first format, in registry order, whose sniff recognises the file, or None."""
    head = b""
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(16)
    return next((f.name for f in REGISTRY.values() if f.sniffs(path, head)), None)


def choices_help(writable: bool = False) -> str:
    """The formats, for an option's help: `name` (suffixes), each."""
    names = WRITABLE if writable else NAMES
    return ", ".join(f"{n} ({' '.join(REGISTRY[n].suffixes) or 'by content'})" for n in names)
