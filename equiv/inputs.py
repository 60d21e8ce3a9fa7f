"""An input batch from a `.npy` file, refused from its header before its data is read.

A `.npy` header declares a dtype and a shape; a small (or sparse) file can declare petabytes.
The declared size is checked against the file's own size and the job against the memory the
machine has before a byte of data is read, and the data is then read from the same open file
into an array of exactly that size, so a file swapped or truncated meanwhile cannot change
what was checked.
"""

from __future__ import annotations

import math
import os

import numpy as np

from equiv import paths
from equiv.errors import EquivError
from equiv.variants import Variant

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy(path: str | os.PathLike, v: Variant, framework: str, dtype: str = "float32") -> np.ndarray:
    """A NHWC batch for `v` from `path`, for a job in `framework` (see checking.check_input): float32
    network inputs, or `dtype="uint8"` raw RGB images (`equiv check --raw-images`)."""
    want = np.dtype(dtype)
    from equiv.checking import check_input

    paths.check_input(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in _HEADER_READERS:
                raise ValueError(f"format version {version[0]}.{version[1]} (equiv reads 1.0 and 2.0)")
            shape, fortran, dtype = _HEADER_READERS[version](f)
        except ValueError as e:
            raise EquivError(f"{path}: not a readable .npy array ({e})") from None
        if dtype.kind != want.kind or dtype.itemsize != want.itemsize:  # either byte order
            what = "raw images as uint8 (0-255 RGB)" if want == np.uint8 else "float32 inputs"
            raise EquivError(f"{path}: holds {dtype} values; equiv runs {what}")
        if len(shape) != 4 or shape[-1] != v.in_channels:
            raise EquivError(f"{path}: input must be NHWC with {v.in_channels} channels, got shape {shape}")
        if 0 in shape:
            raise EquivError(f"{path}: holds an empty array of shape {shape}")
        declared = math.prod(shape) * dtype.itemsize
        held = os.fstat(f.fileno()).st_size - f.tell()
        if declared != held:
            raise EquivError(f"{path}: its header declares shape {shape} ({declared:,} bytes) but the file "
                             f"holds {held:,} bytes of data")
        try:
            check_input(v, shape[0], shape[1], shape[2], frameworks=[framework])
        except EquivError as e:
            raise type(e)(f"{path}: {e}") from None
        # Fortran order: read the transposed C array, then transpose back (a view).
        x = np.empty(shape[::-1] if fortran else shape, dtype)
        buf, got = memoryview(x).cast("B"), 0
        while got < declared:
            n = f.readinto(buf[got:])
            if not n:
                break
            got += n
    if got != declared:
        raise EquivError(f"{path}: changed while it was read ({got:,} of {declared:,} bytes)")
    return np.ascontiguousarray((x.T if fortran else x).astype(want, copy=False))
