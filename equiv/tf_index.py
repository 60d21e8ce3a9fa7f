"""A TF checkpoint's index, read and checked here before TensorFlow's reader sees it.

TensorFlow's native reader trusts the index: a shape of [-1] or [2**31]*3 aborts the whole
process (`Check failed: size >= 0`, SIGABRT), and an entry may declare any size. The index is a
LevelDB table (footer, an index block of block handles, data blocks of prefix-compressed
entries) mapping "" to a BundleHeaderProto and each tensor name to a BundleEntryProto (dtype,
shape, shard, offset, size). It is parsed here in Python, protobuf fields by number, without
importing TensorFlow, and every entry is checked: a shape of non-negative dimensions, no
partitioned slices, a size that is what the dtype and shape make, inside its data file. Only
then does TensorFlow open the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from equiv.errors import EquivError

MAX_INDEX_BYTES = 16 * 1024 * 1024  # a resnet152's is 60 KB; with optimizer slots a few hundred
_MAGIC = 0xDB4775248B80FB57
# bytes per element of the numeric DataType values (types.proto); others are strings, resources, variants
_ITEMSIZE = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 8: 8, 9: 8, 10: 1, 11: 1, 12: 1, 13: 4, 14: 2, 15: 2, 16: 2,
             17: 2, 18: 16, 19: 2, 22: 4, 23: 8}
FLOATING = {1: "float32", 2: "float64", 14: "bfloat16", 19: "float16"}
STRING = 7  # DT_STRING: a size of its own, not elements times a width
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


@dataclass(frozen=True)
class Entry:
    dtype: int  # a tensorflow DataType value
    shape: tuple[int, ...]
    # where its bytes lie (checked inside the data file) and their masked CRC-32C, for equiv.tf_reader
    file: str = ""
    offset: int = 0
    size: int = 0
    crc32c: int | None = None

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE.get(self.dtype, 1)

    def dtype_name(self) -> str:
        return _NAMES.get(self.dtype, f"dtype {self.dtype}")


_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64",
          9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32", 14: "bfloat16", 15: "qint16",
          16: "quint16", 17: "uint16", 18: "complex128", 19: "float16", 20: "resource", 21: "variant",
          22: "uint32", 23: "uint64"}


class _Bad(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Bad("a truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _block(data: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + 5 > len(data):
        raise _Bad(f"a block at {offset} of {size} bytes beyond the end")
    if data[offset + size] != 0:  # the trailer: compression type, then a checksum (TensorFlow checks it)
        raise _Bad(f"a compressed block (type {data[offset + size]})")
    return data[offset:offset + size]


def _entries(block: bytes):
    if len(block) < 4:
        raise _Bad("a block too short for its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise _Bad("a block with an impossible restart count")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise _Bad("an entry beyond its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + length]
        pos += length


def _table(data: bytes) -> dict[bytes, bytes]:
    if len(data) < 48 or int.from_bytes(data[-8:], "little") != _MAGIC:
        raise _Bad("not an sstable (bad magic number)")
    footer = data[-48:-8]
    _, pos = _varint(footer, 0)  # the metaindex handle, unused
    _, pos = _varint(footer, pos)
    index = _block(data, footer[pos:])
    table: dict[bytes, bytes] = {}
    for _, handle in _entries(index):
        table.update(_entries(_block(data, handle)))
    return table


def data_file(prefix: str, shard: int, shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{shards:05d}"


def _fields(buf: bytes):
    """The (field number, value) pairs of a protobuf message: ints for varints and fixed
    fields, bytes for length-delimited ones. The few fields needed are read by number, so that
    the index is checked before TensorFlow (and its protobuf classes) is even imported."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Bad("a truncated field")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Bad("a truncated field")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise _Bad(f"a field of wire type {wire}")
        yield number, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class _Proto:  # what BundleEntryProto (tensor_bundle.proto) says of one tensor
    dtype: int = 0
    dims: list[int] = field(default_factory=list)
    unknown_rank: bool = False
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    slices: int = 0
    crc32c: int | None = None


def _entry(buf: bytes) -> _Proto:
    e = _Proto()
    for number, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            e.dtype = value
        elif number == 2 and isinstance(value, bytes):  # TensorShapeProto
            for n, v in _fields(value):
                if n == 2 and isinstance(v, bytes):  # Dim: size (1), name (2)
                    e.dims.append(next((_signed(x) for k, x in _fields(v) if k == 1 and isinstance(x, int)), 0))
                elif n == 3 and isinstance(v, int):
                    e.unknown_rank = bool(v)
        elif number in (3, 4, 5) and isinstance(value, int):
            setattr(e, {3: "shard_id", 4: "offset", 5: "size"}[number], _signed(value))
        elif number == 6 and isinstance(value, int):  # fixed32
            e.crc32c = value
        elif number == 7:
            e.slices += 1
    return e


def _header(buf: bytes) -> tuple[int, int]:
    """num_shards (1) and endianness (2) of a BundleHeaderProto."""
    found = {n: _signed(v) for n, v in _fields(buf) if n in (1, 2) and isinstance(v, int)}
    return found.get(1, 0), found.get(2, 0)


def read(prefix: str) -> dict[str, Entry]:
    """Every tensor the checkpoint at `prefix` declares, checked; EquivError naming the entry otherwise."""
    index = f"{prefix}.index"
    try:
        with open(index, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_INDEX_BYTES:
                raise EquivError(f"{index}: an index of {size} bytes; equiv reads at most {MAX_INDEX_BYTES}")
            data = f.read(MAX_INDEX_BYTES + 1)
        table = _table(data)
        if b"" not in table:
            raise _Bad("no header entry")
        shards, endianness = _header(table.pop(b""))
        if not 1 <= shards <= 1 << 16 or endianness != 0:
            raise _Bad(f"a header of {shards} shards, endianness {endianness}")
        files = [data_file(prefix, i, shards) for i in range(shards)]
        sizes = [os.stat(f).st_size for f in files]
        out: dict[str, Entry] = {}
        for key, value in table.items():
            name = key.decode("utf-8")
            out[name] = _check(name, _entry(value), sizes, files)
    except (_Bad, UnicodeDecodeError) as e:
        raise EquivError(f"{prefix}: not a readable TF checkpoint (index: {e})") from None
    except OSError as e:
        raise EquivError(f"{prefix}: not a readable TF checkpoint ({e.strerror}: {e.filename})") from None
    return out


def _check(name: str, e: _Proto, sizes: list[int], files: list[str]) -> Entry:
    if e.unknown_rank:
        raise _Bad(f"entry {name} declares no rank")
    count = 1
    for d in e.dims:
        count *= max(d, 0)
    if any(d < 0 for d in e.dims) or len(e.dims) > 32 or count > 1 << 62:
        raise _Bad(f"entry {name} declares the shape {e.dims}")
    if e.slices:
        raise _Bad(f"entry {name} is partitioned into slices, which equiv does not read")
    if e.dtype in _ITEMSIZE and e.size != count * _ITEMSIZE[e.dtype]:
        raise _Bad(f"entry {name} declares {e.size} bytes for {count} elements of {Entry(e.dtype, ()).dtype_name()}")
    if not 0 <= e.shard_id < len(sizes) or e.offset < 0 or e.size < 0 or e.offset + e.size > sizes[e.shard_id]:
        raise _Bad(f"entry {name} lies beyond its data file (shard {e.shard_id}, bytes {e.offset}+{e.size})")
    return Entry(e.dtype, tuple(e.dims), files[e.shard_id], e.offset, e.size, e.crc32c)


def declared_shapes(path) -> dict[str, tuple[int, ...]]:
    """Each variable's name and shape as the checkpoint's index declares them, checked; `path` is
    the prefix or any of its files (equiv.formats' `declared`)."""
    from equiv import paths

    return {n: e.shape for n, e in read(str(paths.tf_prefix(Path(path)))).items()}
