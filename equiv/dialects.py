"""Naming dialects chosen apart from the variant: one network, read and written in the names of
the library that ships it (timm, Hugging Face transformers, keras-hub, torchvision,
keras.applications, tf_slim.nets).

`place(v, "hf")` is `v` with transformers' code as its reference and torch as its native backend:
its files and modules use Hugging Face's names (the torch builder's table keyed "hf"), and its
native build is transformers' own module where transformers imports. Each family says which of its
descriptions each library computes (equiv/families/<family>/dialects.py, `SPELLINGS` and `place`);
this module is the generic face: the names, the lookup, the errors.
"""

from __future__ import annotations

from types import ModuleType

from equiv import families
from equiv.errors import EquivError


def _of(family) -> ModuleType | None:
    import importlib

    try:
        return importlib.import_module(f"{families.get(family).__name__}.dialects")
    except ModuleNotFoundError:
        return None


def names() -> list[str]:
    """Every dialect of every registered family, in registry order."""
    out: list[str] = []
    for family in families.REGISTRY:
        mod = _of(family)
        out += [n for n in (mod.SPELLINGS if mod else ()) if n not in out]
    return out


def spelling(v, name: str):
    """The family's record of dialect `name` for `v`'s family; an EquivError naming the known ones."""
    mod = _of(v.family)
    known = list(mod.SPELLINGS) if mod else []
    if name not in known:
        raise EquivError(f"unknown dialect {name!r} for {v.name}; the {v.family} family knows "
                         f"{', '.join(known) or 'none'}")
    return mod.SPELLINGS[name]


def place(v, name: str):
    """`v` in dialect `name` (see the module docstring)."""
    spelling(v, name)
    return _of(v.family).place(v, name)


def companions(v, filename: str) -> dict[str, str]:
    """Files a library's loader needs beside a weight file named `filename` of `v` in its dialect
    (transformers' `config.json` beside `model.safetensors`): name -> text; none by default."""
    mod = _of(v.family)
    make = getattr(mod, "companions", None) if mod else None
    return make(v, filename) if make and v.dialect else {}


def backend(v, name: str) -> str:
    """The backend whose names dialect `name` is."""
    return spelling(v, name).backend
