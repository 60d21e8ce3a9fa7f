"""What a weight file may declare before any of its data is read.

A file from a stranger can declare a tensor of any size in a few bytes (a safetensors header,
a TF checkpoint index entry, an HDF5 dataspace, a zip member's uncompressed size) and back it
with a sparse file or a deflate bomb. Declared sizes are checked here first, against what
equiv could ever need (the largest parameter and the largest parameter set of the variant
asked for and of every registered one, so that a file of another registered variant is still
read far enough to say which it looks like) and against the memory available.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import lru_cache

import numpy as np

from equiv import canonical as C
from equiv import memory
from equiv.errors import EquivError, ResourceError
from equiv.variants import Variant

FLOAT_BYTES = 8  # float64, the widest floating dtype a reader accepts
OVERHEAD = 64 * memory.MB  # headers, names, pickles, HDF5 metadata: generous for any real file


@lru_cache(maxsize=1)
def _registry_sizes() -> tuple[int, int]:
    from equiv.variants import all_variants

    sizes = [(max(math.prod(s) for s in C.param_shapes(v).values()), C.param_count(v)) for v in all_variants()]
    return max(s[0] for s in sizes), max(s[1] for s in sizes)


def largest_tensor(v: Variant | None) -> int:
    """Elements of the largest parameter any registered variant (or `v`) has."""
    own = max(math.prod(s) for s in C.param_shapes(v).values()) if v is not None else 0
    return max(_registry_sizes()[0], own)


def largest_set(v: Variant | None) -> int:
    """Parameters of the largest registered variant (or `v`)."""
    return max(_registry_sizes()[1], C.param_count(v) if v is not None else 0)


def max_file_bytes(v: Variant | None) -> int:
    """The most bytes a weight file of `v` (or of any registered variant) can hold, as float64."""
    return FLOAT_BYTES * largest_set(v) + OVERHEAD


def elements(source: str, name: str, shape: Iterable) -> int:
    """The element count of a declared shape, refusing what is not a list of small non-negative ints."""
    dims = list(shape)
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and 0 <= d < 2**62 for d in dims):
        raise EquivError(f"{source}: {name} declares the shape {dims}, which no tensor has")
    return math.prod(int(d) for d in dims)


def check_declared(source: str, v: Variant, declared: Mapping[str, tuple[Iterable, int]]) -> None:
    """Refuse declared tensors (name -> (shape, bytes per element)) that equiv could never need,
    or that would not fit in memory, before any of their data is read. (The registered variants'
    sizes are computed only for a tensor bigger than `v`'s own largest: a file of `v` never needs them.)"""
    own, total = max(math.prod(s) for s in C.param_shapes(v).values()), 0
    for name, (shape, itemsize) in declared.items():
        n = elements(source, name, shape)
        if n > own and n > largest_tensor(v):
            raise EquivError(f"{source}: {name} declares {n} elements ({tuple(shape)}); no parameter of {v.name} "
                             f"or any registered variant has more than {largest_tensor(v)}")
        total += n * itemsize
    check_bytes(source, total, v)


def check_bytes(source: str, total: int, v: Variant | None, what: str = "its tensors declare") -> None:
    """Refuse `total` declared bytes beyond any registered variant's weights or the memory available."""
    within_own = v is not None and total <= FLOAT_BYTES * C.param_count(v) + OVERHEAD
    most = None if within_own else max_file_bytes(v)
    if most is not None and total > most:
        of = f"{v.name} or any registered variant" if v is not None else "any registered variant"
        raise EquivError(f"{source}: {what} {memory.human(total)}, more than the weights of {of} "
                         f"({memory.human(most)})")
    room = memory.available()
    if room is not None and 2 * total > room:  # the bytes read and the float32 arrays made of them
        raise ResourceError(f"{source}: {what} {memory.human(total)}; reading them needs about "
                            f"{memory.human(2 * total)} of memory, {memory.human(room)} is available")


def refuse_dtype(source: str, name: str, dtype) -> None:
    raise EquivError(f"{source}: parameter {name} is {dtype}; weights must be floating point "
                     f"(float16, bfloat16, float32, float64)")
