"""HDF5 weight trees, inspected before anything reads them.

HDF5 can make a dataset of bytes that are not in the file: external raw storage (any local
file, /etc/passwd or a token, read as floats), external links and virtual datasets (other
HDF5 files; a missing source reads as zeros), soft links to elsewhere. Every HDF5 reader of
equiv (Keras 2 `.h5`, Keras 3 `.weights.h5`, the one inside a `.keras` archive, the shape
search) walks its weight tree here first, through the links themselves without following
any, and gets back the declared datasets, or an EquivError naming the file, the dataset and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from equiv.errors import EquivError

_STORED_HERE = "equiv reads only weights stored in the file itself"


@dataclass(frozen=True)
class Declared:
    name: str  # the dataset's path in the file
    shape: tuple[int, ...]
    dtype: object  # numpy dtype


def walk(group, source: str) -> list[Declared]:
    """Every dataset under `group` (an open h5py Group), refusing anything stored elsewhere.

    Soft links may point only inside the tree (they are not followed: what they point at is
    visited where it lives); datasets must be contiguous, chunked or compact, with no external
    storage, and floating point; a group reached twice (hard links can make cycles) is visited once."""
    import h5py

    root = group.name.rstrip("/") + "/"
    found: list[Declared] = []
    seen: set[tuple[int, int]] = set()

    def refuse(name: str, why: str, stored_elsewhere: bool = True) -> None:
        raise EquivError(f"{source}: {name}: {why}" + (f"; {_STORED_HERE}" if stored_elsewhere else ""))

    def visit(g) -> None:
        info = h5py.h5o.get_info(g.id)
        if (info.fileno, info.addr) in seen:
            return
        seen.add((info.fileno, info.addr))
        for key in g:
            name = f"{g.name.rstrip('/')}/{key}"
            link = g.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                refuse(name, f"an external link to {link.path} in {link.filename}")
            if isinstance(link, h5py.SoftLink):
                target = link.path if link.path.startswith("/") else f"{g.name.rstrip('/')}/{link.path}"
                if not (target + "/").startswith(root):
                    refuse(name, f"a soft link to {link.path}, outside the weights ({root.rstrip('/') or '/'})")
                continue
            if not isinstance(link, h5py.HardLink):
                refuse(name, f"a link of an unknown kind ({type(link).__name__})")
            obj = g[key]
            if isinstance(obj, h5py.Group):
                visit(obj)
            elif isinstance(obj, h5py.Dataset) and name.startswith(_OPTIMIZER):
                _dataset(obj, name, refuse, weights=False)  # stored here, checked, never a weight
            elif isinstance(obj, h5py.Dataset):
                found.append(_dataset(obj, name, refuse))
            else:
                refuse(name, f"a {type(obj).__name__}, not a dataset")

    visit(group)
    return found


# A Keras 3 `.weights.h5` of a compiled model (keras-hub's tasks) keeps its optimizer's state beside the
# weights, with an int64 iteration counter: checked for where it is stored, never read as a weight.
_OPTIMIZER = "/optimizer/"


def _dataset(ds, name: str, refuse, weights: bool = True) -> Declared:
    import h5py

    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    if ds.is_virtual or layout == h5py.h5d.VIRTUAL:
        refuse(name, "a virtual dataset (its data is in other files)")
    if plist.get_external_count():
        refuse(name, f"a dataset with external raw storage in {plist.get_external(0)[0].decode(errors='replace')}")
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        refuse(name, f"a dataset of unknown layout {layout}")
    if ds.shape is None:
        refuse(name, "a dataset without a shape", False)
    if ds.dtype.kind != "f" and weights:
        refuse(name, f"a dataset of {ds.dtype}; weights must be floating point (float16, float32, float64)", False)
    return Declared(name, tuple(int(d) for d in ds.shape), ds.dtype)


def weights_root(f, keras2: bool, source: str):
    """The group holding the weights: a Keras 2 whole-model file keeps them under model_weights
    (its optimizer's state, not read, lives beside them). Looked up as a link, never followed
    elsewhere."""
    import h5py

    link = f.get("model_weights", getlink=True) if keras2 else None
    if link is None:
        return f
    if not isinstance(link, h5py.HardLink):
        raise EquivError(f"{source}: /model_weights: a {type(link).__name__} (to {getattr(link, 'path', '?')}); "
                         f"{_STORED_HERE}")
    return f["model_weights"]


def declared_sizes(found: list[Declared]) -> dict[str, tuple[tuple[int, ...], int]]:
    """name -> (shape, bytes per element), for equiv.limits.check_declared."""
    return {d.name: (d.shape, d.dtype.itemsize) for d in found}
