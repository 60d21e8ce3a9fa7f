"""Variants as data: one frozen description per network, and the registry of named ones.

`Variant` holds what every network family shares (name, native framework, head size, input
channels, the library code it transcribes); each family subclasses it with the fields of its
own conventions (equiv/families/<family>/description.py) and registers its named networks in
its zoo. The registry fills itself with every registered family's zoo on first use.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import ClassVar

from equiv.errors import EquivError, UnknownVariantError

Framework = str  # a registered backend: a key of equiv.frameworks.REGISTRY


@dataclass(frozen=True, kw_only=True)
class Variant:
    """A network description; its family's subclass adds one field per convention."""

    family: ClassVar[str] = ""  # a key of equiv.families.REGISTRY, set by each family's subclass

    name: str
    native: Framework
    description: str
    num_classes: int = 1000
    in_channels: int = 3
    input_size: tuple[int, int] | None = None  # the only input size a flatten head admits
    notes: tuple[str, ...] = field(default=(), compare=False)
    # The library code this description is a transcription of (tf_slim.nets.resnet_v1.resnet_v1_50,
    # keras.applications.ResNet50, torchvision.models.resnet18, equiv.seed.*), built natively where
    # its library imports; "" for a description no library ships. It changes no number.
    reference: str = ""
    # The input its reference library's weights expect (a name of equiv.preprocessing.RECORDS:
    # channel order, scale, mean, std; "none" for the seed programs, which preprocess nothing).
    # It changes no number of the network.
    preprocessing: str = "none"
    # The naming dialect its files and modules use when chosen apart from the registered variant
    # (equiv.dialects: "hf", "timm", "keras-hub", ...); "" for its registered library's own. Set by
    # in_dialect(), with `reference` and `native` of that dialect's library. It changes no number.
    dialect: str = ""

    def __post_init__(self) -> None:
        from equiv.preprocessing import RECORDS

        if self.preprocessing not in RECORDS:
            raise ValueError(f"{self.name}: unknown preprocessing {self.preprocessing!r}; known: {', '.join(RECORDS)}")

    @property
    def framework(self) -> str:
        """The registry prefix (slim, keras, torchvision, seed, ...)."""
        return self.name.split("/", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split("/", 1)[-1]

    def replace(self, **changes) -> Variant:
        return dataclasses.replace(self, **changes)

    def conventions(self) -> dict:
        """Every field that changes a number (everything but the name, native, reference, prose and the
        preprocessing its weights expect, which is outside the network)."""
        skip = {"name", "native", "description", "notes", "reference", "preprocessing", "dialect"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

    def reference_differences(self) -> list[str]:
        """The conventions in which this description differs from the registered one of its name
        (the head size aside): where it names a reference, that library code no longer computes
        what it says unless this is empty."""
        registered = _registry().get(self.name)
        if registered is not None and self.dialect:  # compared with the registered one in the same dialect
            try:
                registered = registered.in_dialect(self.dialect)
            except EquivError:
                return ["dialect"]
        if registered is None or registered.reference != self.reference or type(registered) is not type(self):
            return ["reference"]
        mine, theirs = self.conventions(), registered.conventions()
        return sorted(k for k in mine if k != "num_classes" and mine[k] != theirs[k])

    def in_dialect(self, dialect: str) -> Variant:
        """The same network in another library's names (equiv.dialects.place): `reference` becomes that
        library's code where it computes this network, `native` that library's backend. An EquivError
        names what the library cannot express."""
        from equiv import dialects

        return dialects.place(self, dialect)

    def built_by(self) -> str:
        """The library code that computes this description (any head size), or "" if none does."""
        return self.reference if self.reference and not self.reference_differences() else ""


# ---------------------------------------------------------------------------------------
# The registry

_REGISTRY: dict[str, Variant] = {}
# Names kept for a registered network in another dialect: name -> (registered name, dialect)
_ALIASES: dict[str, tuple[str, str]] = {}


def _registry() -> dict[str, Variant]:
    from equiv import families

    families.load_zoos()
    return _REGISTRY


def register(variant: Variant) -> Variant:
    if variant.name in _REGISTRY:
        raise ValueError(f"variant {variant.name!r} is already registered")
    _REGISTRY[variant.name] = variant
    return variant


def alias(name: str, target: str, dialect: str) -> None:
    """Keep `name` working for registered `target` in `dialect` (hf/resnet-50 is torchvision/resnet50
    in Hugging Face's names): one network, one description."""
    if name in _REGISTRY or name in _ALIASES:
        raise ValueError(f"variant {name!r} is already registered")
    _ALIASES[name] = (target, dialect)


def aliases() -> dict[str, tuple[str, str]]:
    _registry()
    return dict(_ALIASES)


def names() -> list[str]:
    return list(_registry())


def all_variants() -> list[Variant]:
    return list(_registry().values())


def closest(name: str, n: int = 3) -> list[str]:
    """Registered names near `name`. A full name ("slim/resnet_v2_5O") is matched against full
    names; a bare short name ("resnet50") ranks its exact owners first (several libraries may use
    one short name: slim/resnet_v2_50 and keras_hub/resnet_v2_50)."""
    pool = names() + list(_ALIASES)
    if "/" in name:
        return difflib.get_close_matches(name, pool, n=n, cutoff=0.4)
    short: dict[str, list[str]] = {}
    for full in pool:
        short.setdefault(full.split("/", 1)[-1].lower(), []).append(full)
    hits = list(short.get(name.lower(), []))
    for s in difflib.get_close_matches(name.lower(), list(short), n=n, cutoff=0.6):
        hits += short[s]
    hits += difflib.get_close_matches(name, pool, n=n, cutoff=0.4)
    return list(dict.fromkeys(hits))[:n]


def get(name: str | Variant, num_classes: int | None = None, dialect: str | None = None) -> Variant:
    """Look up a registered variant (or an alias); `num_classes` gives a copy with another head,
    `dialect` the same network in another library's names (Variant.in_dialect)."""
    if isinstance(name, Variant):
        v = name
    else:
        try:
            registry = _registry()
            v = registry[name] if name not in _ALIASES else registry[_ALIASES[name][0]].in_dialect(_ALIASES[name][1])
        except KeyError:
            hint = closest(name)
            msg = f"unknown variant {name!r}"
            msg += f"; did you mean {', '.join(hint)}?" if hint else "; `equiv variants` lists them"
            raise UnknownVariantError(msg) from None
    if num_classes is not None and num_classes != v.num_classes:
        if num_classes < 1:
            raise EquivError(f"num_classes must be positive, got {num_classes}")
        v = v.replace(num_classes=num_classes)
    if dialect is not None and dialect != v.dialect:
        v = v.in_dialect(dialect)
    return v


DEFAULT_VARIANT = "slim/resnet_v2_50"
