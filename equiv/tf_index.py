"""A TF checkpoint's index, read and checked here before TensorFlow's reader sees it.

TensorFlow's native reader trusts the index: a shape of [-1] or [2**31]*3 aborts the whole
process (`Check failed: size >= 0`, SIGABRT), and an entry may declare any size. The index is a
LevelDB table (footer, an index block of block handles, data blocks of prefix-compressed
entries) mapping "" to a BundleHeaderProto and each tensor name to a BundleEntryProto (dtype,
shape, shard, offset, size). It is parsed here in Python, and every entry is checked: a known
dtype, a shape of non-negative dimensions, no partitioned slices, a size that is what the
dtype and shape make, inside its data file. Only then does TensorFlow open the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from equiv.errors import EquivError

MAX_INDEX_BYTES = 16 * 1024 * 1024  # a resnet152's is 60 KB; with optimizer slots a few hundred
_MAGIC = 0xDB4775248B80FB57
# bytes per element of the numeric DataType values (types.proto); others are strings, resources, variants
_ITEMSIZE = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 8: 8, 9: 8, 10: 1, 11: 1, 12: 1, 13: 4, 14: 2, 15: 2, 16: 2,
             17: 2, 18: 16, 19: 2, 22: 4, 23: 8}
FLOATING = {1: "float32", 2: "float64", 14: "bfloat16", 19: "float16"}
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


@dataclass(frozen=True)
class Entry:
    dtype: int  # a tensorflow DataType value
    shape: tuple[int, ...]

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE.get(self.dtype, 1)

    def dtype_name(self) -> str:
        from tensorflow.core.framework import types_pb2

        try:
            return types_pb2.DataType.Name(self.dtype).removeprefix("DT_").lower()
        except ValueError:
            return f"dtype {self.dtype}"


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


def read(prefix: str) -> dict[str, Entry]:
    """Every tensor the checkpoint at `prefix` declares, checked; EquivError naming the entry otherwise."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import tensor_bundle_pb2 as pb

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
        header = pb.BundleHeaderProto.FromString(table.pop(b""))
        if not 1 <= header.num_shards <= 1 << 16 or header.endianness != 0:
            raise _Bad(f"a header of {header.num_shards} shards, endianness {header.endianness}")
        sizes = [os.stat(data_file(prefix, i, header.num_shards)).st_size for i in range(header.num_shards)]
        out: dict[str, Entry] = {}
        for key, value in table.items():
            name = key.decode("utf-8")
            out[name] = _check(name, pb.BundleEntryProto.FromString(value), sizes)
    except (_Bad, DecodeError, UnicodeDecodeError) as e:
        raise EquivError(f"{prefix}: not a readable TF checkpoint (index: {e})") from None
    except OSError as e:
        raise EquivError(f"{prefix}: not a readable TF checkpoint ({e.strerror}: {e.filename})") from None
    return out


def _check(name: str, e, sizes: list[int]) -> Entry:
    from equiv import limits

    if e.shape.unknown_rank:
        raise _Bad(f"entry {name} declares no rank")
    dims = [d.size for d in e.shape.dim]
    if any(d < 0 for d in dims) or len(dims) > 32:
        raise _Bad(f"entry {name} declares the shape {dims}")
    if e.slices:
        raise _Bad(f"entry {name} is partitioned into slices, which equiv does not read")
    count = limits.elements(name, name, dims)
    if e.dtype in _ITEMSIZE and e.size != count * _ITEMSIZE[e.dtype]:
        raise _Bad(f"entry {name} declares {e.size} bytes for {count} elements of dtype {e.dtype}")
    if e.shard_id >= len(sizes) or e.offset + e.size > sizes[e.shard_id]:
        raise _Bad(f"entry {name} lies beyond its data file (shard {e.shard_id}, bytes {e.offset}+{e.size})")
    return Entry(e.dtype, tuple(dims))
