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
from equiv.variants import Variant

# A network of 803 parameters with conv biases, every BatchNorm field and a projection: files of a
# few kilobytes, so thousands of damaged copies are cheap, and every reader is exercised.
TINY = Variant(
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


def write_keras2_h5(path: Path, params: dict[str, np.ndarray], variant: Variant) -> None:
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
