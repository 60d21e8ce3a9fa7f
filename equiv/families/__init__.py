"""Network families: the one registry of them.

A family is a package (equiv/families/<name>/) that provides what `base.Family` lists: its
description type, its plan, its numpy reference, its weight initialisation, its zoo of named
networks, and one builder module per backend, named after the backend
(equiv/families/<name>/<backend>.py). Adding a family is its folder plus one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from equiv.errors import EquivError

REGISTRY: dict[str, str] = {
    "resnet": "equiv.families.resnet",
    "vgg": "equiv.families.vgg",
    "inception": "equiv.families.inception",
}

_zoos_loaded = False


def get(name: str) -> ModuleType:
    """The package of family `name`."""
    try:
        return importlib.import_module(REGISTRY[name])
    except KeyError:
        raise EquivError(f"unknown network family {name!r} (registered: {', '.join(REGISTRY)})") from None


def of(v) -> ModuleType:
    """The family package of description `v`."""
    return get(v.family)


def builder(v, backend: str) -> ModuleType:
    """The module that realises `v`'s family in `backend`; a clear error where there is none."""
    family = of(v)
    try:
        return importlib.import_module(f"{family.__name__}.{backend}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{family.__name__}.{backend}":
            raise
        raise EquivError(f"the {v.family} family has no {backend} builder "
                         f"({family.__name__}.{backend} does not exist)") from None


def load_zoos() -> None:
    """Import every family, so that each registers its named networks (once)."""
    global _zoos_loaded
    if not _zoos_loaded:
        _zoos_loaded = True
        for name in REGISTRY:
            get(name)
