"""Reading safetensors files with ordinary reads, every declared size checked first.

The safetensors library maps the file into memory: a file truncated while it is read then
kills the process with SIGBUS, and a sparse file declaring gigabytes is read in full. Here the
header (8-byte length, JSON) is read and checked against the file's real size before any
tensor, and only the tensors asked for are read, each with os.pread of exactly its declared
bytes: a file cut short underneath gives a short read, which is an EquivError.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from equiv import limits
from equiv.errors import EquivError

# Floating dtypes are converted to float32; every other one is refused by name.
_FLOATS = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "BF16": np.dtype("<u2")}
_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1,
          "F6_E3M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8,
          "U64": 8, "F64": 8, "C64": 8}
MAX_HEADER = 16 * 1024 * 1024  # a resnet152's header is 60 KB; no real weight file comes near


@dataclass(frozen=True)
class Entry:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset in the file
    nbytes: int

    @property
    def itemsize(self) -> int:
        return _SIZES[self.dtype]


def header(path: Path) -> dict[str, Entry]:
    """The tensors a safetensors file declares, checked against its size; no tensor data read."""
    source = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise EquivError(f"{source}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, size - 8):
            raise EquivError(f"{source}: not a readable safetensors file (its header declares {n} bytes; "
                             f"the file holds {size - 8} after the length, and equiv reads at most {MAX_HEADER})")
        raw = f.read(n)
    if len(raw) != n:
        raise EquivError(f"{source}: safetensors file cut short while it was read (header)")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise EquivError(f"{source}: not a readable safetensors file (header: {e})") from None
    if not isinstance(meta, dict):
        raise EquivError(f"{source}: not a readable safetensors file (header is not a JSON object)")
    meta.pop("__metadata__", None)
    data_start, data_len = 8 + n, size - 8 - n
    entries: dict[str, Entry] = {}
    for name, d in meta.items():
        if not (isinstance(d, dict) and isinstance(d.get("dtype"), str) and isinstance(d.get("shape"), list)
                and isinstance(d.get("data_offsets"), list) and len(d["data_offsets"]) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in d["data_offsets"])):
            raise EquivError(f"{source}: not a readable safetensors file (entry {name!r} is not "
                             f"{{dtype, shape, data_offsets}})")
        if d["dtype"] not in _SIZES:
            raise EquivError(f"{source}: not a readable safetensors file (entry {name!r}: unknown dtype {d['dtype']})")
        count = limits.elements(source, name, d["shape"])
        begin, end = d["data_offsets"]
        if not 0 <= begin <= end <= data_len or end - begin != count * _SIZES[d["dtype"]]:
            raise EquivError(f"{source}: not a readable safetensors file (entry {name!r}: offsets {[begin, end]} "
                             f"do not hold {d['dtype']} {d['shape']} within the {data_len} data bytes)")
        entries[name] = Entry(d["dtype"], tuple(d["shape"]), data_start + begin, end - begin)
    return entries


def read(path: Path, entries: dict[str, Entry], names) -> dict[str, np.ndarray]:
    """The tensors `names` as float32 arrays; a non-floating one is refused by name."""
    source = str(path)
    for name in names:
        if entries[name].dtype not in _FLOATS:
            limits.refuse_dtype(source, name, entries[name].dtype)
    out: dict[str, np.ndarray] = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        for name in names:
            e = entries[name]
            # read straight into the array (one copy from the page cache, none after for float32)
            a = np.empty(e.nbytes // np.dtype(_FLOATS[e.dtype]).itemsize, _FLOATS[e.dtype])
            view, got = memoryview(a).cast("B"), 0
            while got < e.nbytes:  # a regular file reads short only at its end (or past 2 GB a call)
                n = os.preadv(fd, [view[got:]], e.begin + got)
                if n <= 0:
                    break
                got += n
            if got != e.nbytes:
                raise EquivError(f"{source}: safetensors file cut short while it was read (tensor {name})")
            if e.dtype == "BF16":  # the upper half of a float32
                a = (a.astype(np.uint32) << 16).view(np.float32)
            out[name] = a.astype(np.float32, copy=False).reshape(e.shape)
    finally:
        os.close(fd)
    return out


def declared_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name and shape as the header declares them, checked (equiv.formats' `declared`)."""
    return {n: e.shape for n, e in header(Path(path)).items()}
