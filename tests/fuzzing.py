"""Fuzzing the weight-file readers: small valid files of every readable format, damaged on
purpose, read in a separate worker process.

The worker is its own process because the readers of three formats are native code (h5py's
HDF5, TensorFlow's checkpoint reader, torch's zip reader): a crash there would take the
interpreter with it. The parent sees a crash as the worker's death (and its signal), a hang
as no answer within CASE_TIMEOUT_S, and anything else as the worker's own report of what
`equiv.files.read` did: loaded a valid result, raised an EquivError, or raised something else.

Run as `python -m tests.fuzzing` it is that worker: one JSON request per line on stdin
({"path": ...}), one JSON answer per line on stdout.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from equiv import canonical as C
from equiv.families.resnet.description import ResNet

# A network of 803 parameters with conv biases, every BatchNorm field and a projection: files of a
# few kilobytes, so thousands of damaged copies are cheap, and every reader is exercised.
TINY = ResNet(
    name="fuzz/tiny", native="torch", description="a tiny variant for fuzzing the file readers",
    block="basic", depths=(1,), widths=(6,), strides=(2,), preact=False, stride_unit="first", stride_conv=1,
    projection="channels_or_stride", shortcut_norm=True, conv_bias="all", conv_padding="symmetric",
    bn_epsilon=1e-5, stem_width=4, stem_kernel=3, stem_stride=1, pool_kernel=1, pool_stride=1,
    pool_padding="valid", num_classes=3,
)
# The file name of each format; the reader is told no format, so detection is fuzzed too.
NAMES = {"tf-checkpoint": "w.ckpt", "keras-weights": "w.weights.h5", "keras-archive": "w.keras",
         "keras2-h5": "w.h5", "torch": "w.pt", "safetensors": "w.safetensors"}
FORMATS = tuple(NAMES)
CASE_TIMEOUT_S = 120  # per case: a hang fails the case, it never stalls the run


def tiny_params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) + (2.0 if k.endswith("variance") else 0.0)
            for k, s in C.param_shapes(TINY).items()}


# ---------------------------------------------------------------------------------------
# Valid files, each written by its framework's own saving code (Keras 2 by its layout)


def write_valid(fmt: str, folder: Path, params: dict[str, np.ndarray]) -> Path:
    from equiv import files
    from equiv.frameworks import adapter

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NAMES[fmt]
    if fmt in ("tf-checkpoint", "keras-weights", "torch", "safetensors"):
        files.write(params, path, TINY)
    elif fmt == "keras-archive":
        ad = adapter("keras")
        model = ad.build(TINY)
        ad.load_params(TINY, model, params)
        model.save(str(path))
    else:
        write_keras2_h5(path, params, TINY)
    return path


def write_keras2_h5(path: Path, params: dict[str, np.ndarray], variant: ResNet) -> None:
    """Keras 2's `save_weights(..., save_format="h5")` layout: layer_names on the root, each
    layer's weight_names on its group, arrays at group/<layer>/<weight>:0."""
    import h5py

    from equiv.frameworks import adapter

    by_layer: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, keras_name in adapter("keras").framework_names(variant).items():
        layer, field = keras_name.rsplit("/", 1)
        by_layer.setdefault(layer, []).append((f"{layer}/{field}:0", params[name]))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in by_layer]
        for layer, weights in by_layer.items():
            g = f.create_group(layer)
            g.attrs["weight_names"] = [w.encode() for w, _ in weights]
            for w, a in weights:
                g.create_dataset(w, data=a)


def file_parts(fmt: str, path: Path) -> list[Path]:
    """The files a format is made of (a TF checkpoint: its index and its data)."""
    if fmt == "tf-checkpoint":
        return sorted(path.parent.glob(path.name + ".*"))
    return [path]


def copy_case(fmt: str, valid: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in file_parts(fmt, valid):
        shutil.copy(p, folder / p.name)
    return folder / valid.name


# ---------------------------------------------------------------------------------------
# Damage


def flip(path: Path, edits: list[tuple[float, int]]) -> None:
    """Overwrite bytes: each edit is (position as a fraction of the size, new byte)."""
    data = bytearray(path.read_bytes())
    for where, byte in edits:
        data[min(int(where * len(data)), len(data) - 1)] = byte
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data))])


def swap(fmt: str, path: Path, i: int, j: int) -> None:
    """Swap two arrays of a valid file under their names (the i-th and j-th stored)."""
    if fmt == "safetensors":
        from safetensors.numpy import load_file, save_file

        d = load_file(str(path))
        a, b = sorted(d)[i % len(d)], sorted(d)[j % len(d)]
        d[a], d[b] = d[b], d[a]
        save_file(d, str(path))
    elif fmt == "torch":
        import torch

        d = torch.load(path, weights_only=True)
        keys = list(d)
        a, b = keys[i % len(keys)], keys[j % len(keys)]
        d[a], d[b] = d[b], d[a]
        torch.save(d, path)
    elif fmt == "tf-checkpoint":
        import tensorflow as tf

        reader = tf.train.load_checkpoint(str(path))
        names = sorted(reader.get_variable_to_shape_map())
        values = {n: reader.get_tensor(n) for n in names}
        a, b = names[i % len(names)], names[j % len(names)]
        values[a], values[b] = values[b], values[a]
        for p in file_parts(fmt, path):
            p.unlink()
        tf.raw_ops.SaveV2(prefix=str(path), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[values[n] for n in names])
    elif fmt == "keras-archive":
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        inner = path.parent / "inner.weights.h5"
        inner.write_bytes(members["model.weights.h5"])
        swap("keras-weights", inner, i, j)
        members["model.weights.h5"] = inner.read_bytes()
        inner.unlink()
        with zipfile.ZipFile(path, "w") as z:
            for n, data in members.items():
                z.writestr(n, data)
    else:
        import h5py

        with h5py.File(path, "r+") as f:
            sets: list[str] = []
            f.visititems(lambda n, o: sets.append(n) if isinstance(o, h5py.Dataset) else None)
            a, b = sets[i % len(sets)], sets[j % len(sets)]
            if a != b:
                f.move(a, "__swap__")
                f.move(b, a)
                f.move("__swap__", b)


def damage_inner(path: Path, edits: list[tuple[float, int]], keep: float) -> None:
    """A .keras archive whose inner model.weights.h5 is damaged (the zip itself stays sound)."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    inner = bytearray(members["model.weights.h5"])
    for where, byte in edits:
        inner[min(int(where * len(inner)), len(inner) - 1)] = byte
    members["model.weights.h5"] = bytes(inner[: max(1, int(keep * len(inner)))])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    path.write_bytes(buf.getvalue())


# ---------------------------------------------------------------------------------------
# Structural attacks: files that are well formed but declare what they should not


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")  # one restart, at 0


def _with_trailer(block: bytes) -> bytes:
    crc = _crc32c(block + b"\x00")
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF  # leveldb's masked CRC
    return block + b"\x00" + masked.to_bytes(4, "little")


def write_table(path: Path, table: dict[bytes, bytes]) -> None:
    """A LevelDB table as TensorFlow's checkpoint index is one (uncompressed, checksummed):
    TensorFlow's own reader reads what this writes."""
    data = _block(sorted(table.items()))
    meta = _block([])
    out = _with_trailer(data)
    meta_at = len(out)
    out += _with_trailer(meta)
    index = _block([(max(table) + b"\xff", _varint(0) + _varint(len(data)))])
    index_at = len(out)
    out += _with_trailer(index)
    footer = _varint(meta_at) + _varint(len(meta)) + _varint(index_at) + _varint(len(index))
    out += footer.ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    path.write_bytes(out)


def rewrite_index(prefix: Path, change) -> None:
    """Rewrite a TF checkpoint's index with `change(name, BundleEntryProto)` applied to every entry."""
    from tensorflow.core.protobuf import tensor_bundle_pb2 as pb

    from equiv import tf_index

    index = Path(str(prefix) + ".index")
    table = tf_index._table(index.read_bytes())
    for key in list(table):
        if key:
            entry = pb.BundleEntryProto.FromString(table[key])
            change(key.decode(), entry)
            table[key] = entry.SerializeToString()
    write_table(index, table)


def h5_external_storage(path: Path, secret: Path, which: int = 0) -> str:
    """Replace the `which`-th dataset of an HDF5 weight file by one of the same shape whose bytes
    are another local file (HDF5 external raw storage); returns the dataset's name."""
    import h5py

    with h5py.File(path, "r+") as f:
        name = _datasets(f)[which % len(_datasets(f))]
        shape, dtype = f[name].shape, f[name].dtype
        del f[name]
        f.create_dataset(name, shape, dtype, external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    return name


def _moved_out(f, other: Path, which: int):
    """One dataset of open file `f` removed, its data put in file `other` as /x: (its name, its data)."""
    import h5py

    name = _datasets(f)[which % len(_datasets(f))]
    data = f[name][()]
    del f[name]
    with h5py.File(other, "w") as o:
        o["x"] = data
    return name, data


def h5_external_link(path: Path, other: Path, which: int = 0) -> str:
    import h5py

    with h5py.File(path, "r+") as f:
        name, data = _moved_out(f, other, which)
        f[name] = h5py.ExternalLink(str(other), "/x")
    return name


def h5_virtual(path: Path, other: Path, which: int = 0) -> str:
    import h5py

    with h5py.File(path, "r+") as f:
        name, data = _moved_out(f, other, which)
        layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
        layout[...] = h5py.VirtualSource(str(other), "x", shape=data.shape)
        f.create_virtual_dataset(name, layout)
    return name


def h5_soft_link_out(path: Path, which: int = 0) -> str:
    """Move the whole weight tree under /model_weights (a Keras 2 whole-model file) and make one
    dataset a soft link to a copy outside it."""
    import h5py

    with h5py.File(path, "r+") as f:
        top = list(f)
        f.create_group("model_weights")
        for k in top:
            f.move(k, f"model_weights/{k}")
        f["model_weights"].attrs.update(dict(f.attrs))
        name = _datasets(f["model_weights"])[which % len(_datasets(f["model_weights"]))]
        f.create_group("outside")
        f.move(name, "/outside/x")
        f[name] = h5py.SoftLink("/outside/x")
    return name


def h5_retype(path: Path, dtype: str, which: int = 0) -> str:
    """The `which`-th dataset stored as `dtype` (an integer type: a dtype swap)."""
    import h5py

    with h5py.File(path, "r+") as f:
        name = _datasets(f)[which % len(_datasets(f))]
        data = f[name][()]
        del f[name]
        f.create_dataset(name, data=(data * 1000).astype(dtype))
    return name


def h5_huge(path: Path, which: int = 0, elements: int = 2**30) -> str:
    """One dataset declared with `elements` float32 values and never written (nothing stored)."""
    import h5py

    with h5py.File(path, "r+") as f:
        name = _datasets(f)[which % len(_datasets(f))]
        del f[name]
        f.create_dataset(name, (elements,), "f4")
    return name


def change_inner(archive: Path, change) -> None:
    """Apply `change(path)` to the model.weights.h5 inside a .keras archive (the zip stays sound)."""
    with zipfile.ZipFile(archive) as z:
        members = {n: z.read(n) for n in z.namelist()}
    inner = archive.parent / "inner.weights.h5"
    inner.write_bytes(members["model.weights.h5"])
    change(inner)
    members["model.weights.h5"] = inner.read_bytes()
    inner.unlink()
    with zipfile.ZipFile(archive, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


def _datasets(group) -> list[str]:
    import h5py

    found: list[str] = []
    group.visititems(lambda n, o: found.append(o.name) if isinstance(o, h5py.Dataset) else None)
    return sorted(found)


def safetensors_declaring(path: Path, name: str, shape: list[int], dtype: str = "F32",
                          data_bytes: int | None = None) -> None:
    """A safetensors file of one tensor whose header declares `shape`, backed by a sparse file
    of `data_bytes` (default: exactly what the shape needs)."""
    size = {"F32": 4, "I32": 4, "F16": 2}[dtype] * int(np.prod(shape, dtype=object))
    header = json.dumps({name: {"dtype": dtype, "shape": shape, "data_offsets": [0, size]}}).encode()
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + (size if data_bytes is None else data_bytes))


def safetensors_retype(path: Path, dtype: str = "I32", which: int = 0) -> str:
    """One tensor of a valid safetensors file stored as integers (a dtype swap)."""
    from equiv import safetensors_reader

    entries = safetensors_reader.header(path)
    name = sorted(entries)[which % len(entries)]
    _resave_safetensors(path, lambda d: d.__setitem__(name, (d[name] * 1000).astype({"I32": np.int32,
                                                                                      "I64": np.int64}[dtype])))
    return name


def _resave_safetensors(path: Path, change) -> None:
    from safetensors.numpy import save_file

    from equiv import safetensors_reader

    entries = safetensors_reader.header(path)
    d = safetensors_reader.read(path, entries, list(entries))
    change(d)
    save_file(d, str(path))


def torch_retype(path: Path, which: int = 0) -> str:
    import torch

    d = torch.load(path, weights_only=True)
    floats = sorted(k for k, t in d.items() if t.is_floating_point())  # not BatchNorm's step counters
    name = floats[which % len(floats)]
    d[name] = (d[name] * 1000).to(torch.int32)
    torch.save(d, path)
    return name


def zip_bomb(path: Path, gigabytes: float = 1.0) -> None:
    """Deflate one member of a zip (a torch file) to `gigabytes` of zeros: a few MB on disk."""
    with zipfile.ZipFile(path) as z:
        members = [(i, z.read(i.filename)) for i in z.infolist()]
    target = max(members, key=lambda m: len(m[1]))[0].filename
    with zipfile.ZipFile(path, "w") as z:
        for info, data in members:
            if info.filename != target:
                z.writestr(info, data)
                continue
            zi = zipfile.ZipInfo(info.filename)
            zi.compress_type = zipfile.ZIP_DEFLATED
            with z.open(zi, "w", force_zip64=True) as out:
                chunk = bytes(64 * 1024 * 1024)
                for _ in range(int(gigabytes * 16)):
                    out.write(chunk)


def tf_retype(path: Path, which: int = 0) -> str:
    """One tensor of a TF checkpoint saved as int32 (a dtype swap)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path))
    names = sorted(reader.get_variable_to_shape_map())
    values = {n: reader.get_tensor(n) for n in names}
    params = [n for n in names if n != "global_step"]
    name = params[which % len(params)]
    values[name] = (values[name] * 1000).astype(np.int32)
    for p in file_parts("tf-checkpoint", path):
        p.unlink()
    tf.raw_ops.SaveV2(prefix=str(path), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[values[n] for n in names])
    return name


def _index_shape(shape):
    def change(name, entry):
        if entry.dtype == 1 and not change.done:  # the first float tensor
            del entry.shape.dim[:]
            for d in shape:
                entry.shape.dim.add(size=d)
            change.done = True
    change.done = False
    return change


def _index_dtype(name, entry):
    if entry.dtype == 1:
        entry.dtype = 3  # DT_INT32 over float32 bytes: the same size, other values


def _safetensors_huge(path: Path, which: int) -> None:
    """One entry of a valid file re-declared as 2**30 float32 values, backed by a sparse tail."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    name = sorted(k for k in header if k != "__metadata__")[which % (len(header) - ("__metadata__" in header))]
    body = len(data) - 8 - n
    header[name] = {"dtype": "F32", "shape": [2**30], "data_offsets": [body, body + 4 * 2**30]}
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
        f.truncate(8 + len(raw) + body + 4 * 2**30)


def _safetensors_header_length(path: Path, which: int) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = (2**40 + which).to_bytes(8, "little")
    path.write_bytes(bytes(data))


def _inside(attack_h5):
    """An HDF5 attack on the model.weights.h5 of a .keras archive."""
    return lambda path, which: change_inner(path, lambda inner: attack_h5(inner, which))


_H5 = {
    "external-storage": lambda p, w: h5_external_storage(p, _secret(p), w),
    "external-link": lambda p, w: h5_external_link(p, p.parent / "other.h5", w),
    "virtual": lambda p, w: h5_virtual(p, p.parent / "other.h5", w),
    "soft-link-out": lambda p, w: h5_soft_link_out(p, w),
    "huge-dataset": lambda p, w: h5_huge(p, w),
    "int-dtype": lambda p, w: h5_retype(p, "int64", w),
}
# Structural attacks per format: well-formed files that store data elsewhere, declare sizes far
# beyond what is there, or hold integers. Every one must be refused (never loaded).
ATTACKS = {
    "keras-weights": _H5,
    "keras2-h5": _H5,
    "keras-archive": {**{k: _inside(f) for k, f in _H5.items()},
                      "deflate-bomb": lambda p, w: zip_bomb(p, 0.6)},
    "safetensors": {"huge-tensor": _safetensors_huge, "huge-header": _safetensors_header_length,
                    "int-dtype": lambda p, w: safetensors_retype(p, "I32", w)},
    "tf-checkpoint": {"negative-shape": lambda p, w: rewrite_index(p, _index_shape([-1 - w % 3])),
                      "overflowing-shape": lambda p, w: rewrite_index(p, _index_shape([2**31] * 3)),
                      "huge-shape": lambda p, w: rewrite_index(p, _index_shape([2**20, 2**20])),
                      "index-int-dtype": lambda p, w: rewrite_index(p, _index_dtype),
                      "int-dtype": lambda p, w: tf_retype(p, w)},
    "torch": {"deflate-bomb": lambda p, w: zip_bomb(p, 0.6), "int-dtype": lambda p, w: torch_retype(p, w)},
}
SECRET = b"SECRET-TOKEN-do-not-leak\n"


def _secret(path: Path) -> Path:
    secret = path.parent / "secret.txt"
    secret.write_bytes(SECRET * 1000)
    return secret


def attack(fmt: str, path: Path, name: str, which: int) -> None:
    ATTACKS[fmt][name](path, which)


# ---------------------------------------------------------------------------------------
# The worker and its client


def classify(path: str) -> dict:
    """What equiv.files.read does with `path`, as the worker reports it."""
    from equiv import files
    from equiv.errors import EquivError

    try:
        params = files.read(path, TINY)
    except EquivError as e:
        return {"outcome": "error", "type": type(e).__name__, "message": str(e)}
    except BaseException as e:  # noqa: BLE001 - exactly what the fuzzing is looking for
        return {"outcome": "foreign", "type": type(e).__name__, "message": str(e)[:500]}
    expected = C.param_shapes(TINY)
    valid = (set(params) == set(expected) and all(params[k].shape == s for k, s in expected.items())
             and all(a.dtype == np.float32 and np.isfinite(a).all() for a in params.values()))
    return {"outcome": "loaded" if valid else "invalid", "type": None, "message": None}


def _serve() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.simplefilter("ignore")
    for line in sys.stdin:
        answer = classify(json.loads(line)["path"])
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class WorkerDied(Exception):
    pass


class Worker:
    """A reader process; restarted after it dies or hangs, so one bad case fails only itself."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(self.cwd), TF_CPP_MIN_LOG_LEVEL="3")
        return subprocess.Popen([sys.executable, "-m", "tests.fuzzing"], cwd=self.cwd, env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def read(self, path: Path, timeout: float = CASE_TIMEOUT_S) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        self.proc.stdin.write(json.dumps({"path": str(path)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            hung = self.proc.poll() is None
            self.close()
            code = self.proc.returncode
            self.proc = None
            raise WorkerDied(f"no answer in {timeout:.0f} s (a hang)" if hung else f"the reader process died ({code})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def normalise(message: str, path: Path) -> str:
    """An error message with the case's own paths taken out, so equal messages count once."""
    for p in sorted({str(path), str(path.parent)}, key=len, reverse=True):
        message = message.replace(p, "<file>" if p == str(path) else "<dir>")
    return re.sub(r"/tmp/\S+", "<tmp>", message)


if __name__ == "__main__":
    _serve()
