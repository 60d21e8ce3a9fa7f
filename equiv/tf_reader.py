"""A TF checkpoint's tensors, read without TensorFlow.

A checkpoint's data file holds each numeric tensor as its raw little-endian bytes, at the offset
its index entry gives, with the entry's masked CRC-32C of those bytes (tensor_bundle.proto). The
index is read and checked first (equiv.tf_index: every entry inside its data file, of the size its
dtype and shape make). Here each floating-point tensor is read straight into its array and its
checksum verified (google-crc32c), as TensorFlow's reader does: one copy from the page cache,
where TensorFlow's `get_tensor` makes a tensor and then a numpy array of it. A VGG-16 checkpoint
(528 MB) reads in about 0.6x TensorFlow's time.

A tensor this reader does not take (bfloat16 and other dtypes, an entry with no checksum, or no
google-crc32c installed) is read by TensorFlow's own reader, opened only then.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np

from equiv.errors import EquivError, FrameworkError
from equiv.tf_index import Entry

_NUMPY = {1: np.float32, 2: np.float64, 19: np.float16}  # DataType -> numpy, little-endian


def _crc32c():
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.value


def _unmask(masked: int) -> int:
    """The CRC a masked one stands for (LevelDB's mask: rotated right 15 bits, plus a constant)."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def readable(entry: Entry) -> bool:
    """Whether `read` takes this entry itself (else TensorFlow's reader must)."""
    return entry.dtype in _NUMPY and entry.crc32c is not None and bool(entry.file) and _crc32c() is not None


def read(entry: Entry, source: str, name: str) -> np.ndarray:
    """The tensor `name` of the checkpoint `source`, its checksum verified; EquivError naming both
    when the data file is shorter than its index says or its bytes do not match their checksum."""
    a = np.empty(entry.size // np.dtype(_NUMPY[entry.dtype]).itemsize, _NUMPY[entry.dtype])
    view, got = memoryview(a.view(np.uint8)), 0
    fd = os.open(entry.file, os.O_RDONLY)
    try:
        while got < entry.size:  # a regular file reads short only at its end (or past 2 GB a call)
            n = os.preadv(fd, [view[got:]], entry.offset + got)
            if n <= 0:
                break
            got += n
    finally:
        os.close(fd)
    if got != entry.size:
        raise EquivError(f"{source}: {name}: the data file ends before the tensor does ({got} of {entry.size} bytes)")
    a.flags.writeable = False  # google-crc32c takes read-only buffers only
    crc = _crc32c()(a)
    a.flags.writeable = True
    if crc != _unmask(entry.crc32c):
        raise EquivError(f"{source}: {name}: its bytes do not match their checksum: the checkpoint is damaged")
    return a.reshape(entry.shape)


def reader(prefix: str, entries: Mapping[str, Entry]) -> Callable[[str], np.ndarray]:
    """name -> the tensor, read here where `readable`, else by TensorFlow's reader (opened once,
    on first need)."""
    tf_reader = []

    def get(name: str) -> np.ndarray:
        entry = entries[name]
        if readable(entry):
            return read(entry, prefix, name)
        if not tf_reader:
            try:
                import tensorflow as tf
            except ImportError as e:
                why = "google-crc32c is not installed" if _crc32c() is None else f"it is {entry.dtype_name()}"
                raise FrameworkError(f"{prefix}: {name}: {why}, so TensorFlow's reader must read it, and TensorFlow "
                                     f"does not import ({e})") from None
            tf_reader.append(tf.train.load_checkpoint(prefix))
        return tf_reader[0].get_tensor(name)

    return get
