"""The golden file itself: one zip per variant of a `meta.json`, the input, a fingerprint of the
seeded weights and each framework's taps; encoded deterministically (the same taps give the same
bytes), decoded with every field checked, so that a damaged file is one `GoldenFileError` naming
the file and what is wrong with it, never a traceback later.

The native framework's taps are stored as float32; the others, which differ from them by a few
units in the last place, as the integer difference of their bit patterns (lossless, and it
compresses about four times better than a second float32 copy).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from equiv.errors import EquivError
from equiv.frameworks import FRAMEWORKS
from equiv.variants import Variant

FORMAT = "equiv-golden/1"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same taps give the same bytes
_META_KEYS = ("variant", "settings", "frameworks", "taps", "versions", "environment", "command", "weights",
              "equiv_version")


class GoldenFileError(EquivError):
    """A golden file is missing, unreadable, or describes another network than the variant."""



@dataclass
class Golden:
    """One golden file, decoded: its metadata and each framework's taps."""

    path: Path
    meta: dict
    input: np.ndarray
    fingerprint: np.ndarray
    taps: dict[str, dict[str, np.ndarray]]  # framework -> tap -> array

    @property
    def tap_names(self) -> list[str]:
        return [t for t, _ in self.meta["taps"]]


def path_for(directory: str | Path, v: Variant) -> Path:
    return Path(directory) / f"{v.name}.npz"


def _delta(a: np.ndarray, base: np.ndarray) -> np.ndarray:
    """a's float32 bit patterns minus base's (mod 2**32), zigzagged so that small differences of
    either sign are small unsigned numbers, as four byte planes: mostly zero bytes where the two
    nearly agree, which compresses far better than the floats themselves."""
    d = (a.view(np.uint32) - base.view(np.uint32)).view(np.int32)
    zz = ((d << 1) ^ (d >> 31)).view(np.uint32)
    return np.ascontiguousarray(zz.view(np.uint8).reshape(-1, 4).T)


def _undelta(planes: np.ndarray, base: np.ndarray) -> np.ndarray:
    zz = np.ascontiguousarray(planes.T).view(np.uint32).reshape(-1)
    d = (zz >> 1) ^ (np.uint32(0) - (zz & np.uint32(1)))
    return (base.view(np.uint32) + d).view(np.float32)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def encode(meta: dict, x: np.ndarray, fp: np.ndarray, taps: dict[str, dict[str, np.ndarray]]) -> bytes:
    """The file's bytes: deterministic (fixed timestamps, sorted metadata) so identical taps give
    an identical file. Each framework's taps are concatenated in network order into one member
    (`taps/<framework>.npy`): the first framework of `meta["frameworks"]` as float32, the others
    as differences from it (`_delta`)."""
    order = list(meta["frameworks"])
    names = [t for t, _ in meta["taps"]]
    flat = {fw: np.concatenate([np.asarray(taps[fw][t], np.float32).reshape(-1) for t in names]) for fw in order}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        def put(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compresslevel=9)

        put("meta.json", (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
        put("input.npy", _npy(x.astype(np.float32)))
        put("weights_fingerprint.npy", _npy(fp))
        for fw in order:
            put(f"taps/{fw}.npy", _npy(flat[fw] if fw == order[0] else _delta(flat[fw], flat[order[0]])))
    return buf.getvalue()


def read(path: str | Path) -> Golden:
    """Decode a golden file; any damage is a GoldenFileError naming the file and member."""
    path = Path(path)
    if not path.is_file():
        raise GoldenFileError(f"no golden file {path}")
    return decode(path.read_bytes(), path)


def _check_meta(meta, path: Path) -> None:
    """Every field that verify and update read, of the type they read it as: a damaged meta.json
    is one GoldenFileError naming the field, never a KeyError or TypeError later."""
    def bad(field: str, expected: str) -> GoldenFileError:
        return GoldenFileError(f"{path}: meta.json: {field} is not {expected}")

    def is_str_dict(x) -> bool:
        return isinstance(x, dict) and all(isinstance(k, str) for k in x)

    def is_shape(x) -> bool:
        return isinstance(x, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in x)

    if not isinstance(meta, dict):
        raise GoldenFileError(f"{path}: meta.json is not a JSON object")
    if meta.get("format") != FORMAT:
        raise GoldenFileError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    absent = [k for k in _META_KEYS if k not in meta]
    if absent:
        raise GoldenFileError(f"{path}: meta.json lacks {', '.join(absent)}")
    variant = meta["variant"]
    if not (is_str_dict(variant) and isinstance(variant.get("name"), str) and is_str_dict(variant.get("conventions"))
            and is_str_dict(variant.get("param_shapes")) and all(map(is_shape, variant["param_shapes"].values()))):
        raise bad("variant", "an object with name, conventions and param_shapes")
    settings = meta["settings"]
    integers = ("seed", "batch", "height", "width")
    if not (is_str_dict(settings) and all(isinstance(settings.get(k), int) for k in integers)
            and (settings.get("sample") is None or isinstance(settings["sample"], int))):
        raise bad("settings", "an object of integers seed, batch, height, width and sample (or null)")
    fws = meta["frameworks"]
    if not (isinstance(fws, list) and fws and all(f in FRAMEWORKS for f in fws) and len(set(fws)) == len(fws)):
        raise bad("frameworks", f"a list of distinct frameworks among {', '.join(FRAMEWORKS)}")
    taps = meta["taps"]
    if not (isinstance(taps, list) and taps and all(isinstance(t, list) and len(t) == 2 and isinstance(t[0], str)
                                                   and is_shape(t[1]) for t in taps)):
        raise bad("taps", "a list of [tap name, shape]")
    if not (is_str_dict(meta["versions"]) and all(is_str_dict(x) for x in meta["versions"].values())):
        raise bad("versions", "an object of objects")
    if not is_str_dict(meta["environment"]):
        raise bad("environment", "an object")
    w = meta["weights"]
    if not (is_str_dict(w) and isinstance(w.get("generator"), str) and isinstance(w.get("sha256"), str)):
        raise bad("weights", "an object with generator and sha256")
    for key in ("command", "equiv_version"):
        if not isinstance(meta[key], str):
            raise bad(key, "a string")


def decode(data: bytes, path: Path) -> Golden:
    """Decode a golden file's bytes (`path` names it in errors)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            meta = json.loads(zf.read("meta.json"))
            _check_meta(meta, path)

            def arr(name: str) -> np.ndarray:
                with zf.open(name) as f:
                    return np.lib.format.read_array(f, allow_pickle=False)

            order = list(meta["frameworks"])
            sizes = [math.prod(shape) for _, shape in meta["taps"]]
            base = arr(f"taps/{order[0]}.npy")
            taps = {}
            for fw in order:
                flat = base if fw == order[0] else _undelta(arr(f"taps/{fw}.npy"), base)
                if flat.dtype != np.float32 or flat.shape != (sum(sizes),):
                    raise GoldenFileError(f"{path}: taps/{fw}.npy holds {flat.dtype} {flat.shape}, "
                                          f"the metadata's taps need float32 ({sum(sizes)},)")
                parts = np.split(flat, np.cumsum(sizes)[:-1])
                taps[fw] = {t: p.reshape(shape) for (t, shape), p in zip(meta["taps"], parts)}
            s = meta["settings"]
            x, fp = arr("input.npy"), arr("weights_fingerprint.npy")
            if x.dtype != np.float32 or x.shape[:3] != (s["batch"], s["height"], s["width"]) or x.ndim != 4:
                raise GoldenFileError(f"{path}: input.npy holds {x.dtype} {x.shape}, the settings need float32 "
                                      f"({s['batch']}, {s['height']}, {s['width']}, channels)")
            if fp.dtype != np.float64 or fp.shape != (len(meta["variant"]["param_shapes"]), 2):
                raise GoldenFileError(f"{path}: weights_fingerprint.npy holds {fp.dtype} {fp.shape}, expected "
                                      f"float64 ({len(meta['variant']['param_shapes'])}, 2)")
            return Golden(path, meta, x, fp, taps)
    except GoldenFileError:
        raise
    except (OSError, EOFError, KeyError, IndexError, ValueError, TypeError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as e:  # what zipfile, json and numpy raise on damaged bytes
        raise GoldenFileError(f"{path}: not a readable golden file ({type(e).__name__}: {e})") from None
