"""What a network family provides: the contract every family package meets.

A family package (equiv/families/<name>/__init__.py) exposes these names, and one builder
module per backend, equiv/families/<name>/<backend>.py, that meets `Builder`. Generic code
reaches them only through equiv.families and equiv.canonical; tests/families/test_contract.py
checks every registered family against this.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from equiv.errors import FrameworkError
from equiv.variants import Variant


class Plan(Protocol):
    """The family's plan module: everything derived from a description without a framework."""

    def param_shapes(self, v: Variant) -> dict[str, tuple[int, ...]]: ...
    def tap_names(self, v: Variant) -> list[str]: ...
    def output_tap(self, v: Variant) -> str: ...
    def head_taps(self, v: Variant) -> list[str]: ...
    def tap_depths(self, v: Variant) -> dict[str, int]: ...
    def tap_shapes(self, v: Variant, height: int, width: int) -> dict[str, tuple[int, ...]]: ...
    def flops(self, v: Variant, height: int, width: int) -> int: ...
    def min_body_size(self, v: Variant) -> int: ...
    def unit_count(self, v: Variant) -> int: ...


class Family(Protocol):
    """A family package."""

    Description: type[Variant]  # its description type
    plan: Plan
    # The numpy reference: segments(v, params, *, bn, dtype, convolve) -> [(tap, input tap, fn)],
    # inference_bn(v, params); equiv.reference chains the segments.
    reference: ModuleType
    zoo: ModuleType  # registers its named networks on import
    strategies: ModuleType  # hypothesis: variants(**options), mutations(v, *, size, fields), CONVENTIONS

    def initial_params(self, v: Variant, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random He-scaled parameters before BatchNorm calibration (equiv.weights)."""


class Builder(Protocol):
    """equiv/families/<family>/<backend>.py: the family realised in one backend.

    The backend's adapter (equiv/frameworks/<backend>.py) does everything else (parameters in
    and out, running, releasing, files) through these."""

    DIALECTS: Mapping[str, Dialect]  # the libraries whose names (and builds) it knows, default first

    def build(self, v: Variant, *args, reference: bool | None = None) -> Any:
        """A model computing `v` in eval mode: the library's own code where `reference` is not
        False and `v.built_by()` names it, otherwise equiv's generic builder. (slim: the taps of
        the graph built on input placeholder `args[0]`, in the graph and session its adapter made.)"""

    def framework_names(self, v: Variant) -> Mapping[str, str]:
        """canonical parameter name -> the backend's name for it (the dialect of `v.reference`'s
        library, or equiv's generic scheme)."""


# ---------------------------------------------------------------------------------------
# Dialects: how one library names (and builds) a family in one backend


@dataclass(frozen=True)
class Dialect:
    """One library's code for a family in one backend (tf_slim.nets, keras.applications,
    torchvision, the seed's programs): its names, as a table the family's builder module reads,
    and the library's own build where equiv runs it. Each builder module lists its dialects in
    `DIALECTS`; a description chooses one through its `reference` field (the library code it
    transcribes), and its default is the builder's first."""

    library: str  # the prefix of Variant.reference it serves: "keras.applications.", "equiv.seed.keras_resnet_v2"
    names: Mapping[str, str] = field(default_factory=dict)  # the library's names (the builder says their form)
    # Builds the library's own code; None where equiv's generic build is its transcription.
    build: Callable | None = None
    # What reference=None does with a description changed from the library's: build it
    # generically ("generic"), or refuse and name the change ("refuse").
    changed: str = "generic"
    # Its public name (equiv.dialects: "torchvision", "timm", "hf", "keras-hub", "keras", "slim"), by which
    # a description is placed in it apart from its registered library (Variant.in_dialect); "" for none.
    key: str = ""


def dialect(dialects: Mapping[str, Dialect], v: Variant) -> Dialect:
    """The dialect `v` is named in: the one chosen for it (`v.dialect`, the entry of that key whose
    library wrote its `reference`, else the first of that key), else the one whose library wrote the
    code that computes `v` (`v.built_by()`), else the builder's default (its first)."""
    chosen = [d for d in dialects.values() if v.dialect and d.key == v.dialect]
    if chosen:
        return next((d for d in chosen if v.reference and v.reference.startswith(d.library)), chosen[0])
    # the library whose code computes `v` wherever it imports: its names do not depend on this environment
    built_by = Variant.built_by(v)
    for d in dialects.values():
        if built_by and built_by.startswith(d.library):
            return d
    return next(iter(dialects.values()))


def library_build(dialects: Mapping[str, Dialect], backend: str, v: Variant,
                  reference: bool | None) -> tuple[bool, Callable | None]:
    """Whether `v` is built by its reference library's code in `backend`, and that build (None
    where equiv's generic builder is the transcription). reference=None: where that code
    computes `v`; True: insist (FrameworkError saying why not); False: never."""
    named = next((d for d in dialects.values() if v.reference and v.reference.startswith(d.library)), None)
    native = v.native == backend
    computes = named is not None and native and bool(v.built_by())
    if reference is None:
        reference = computes or (named is not None and native and named.changed == "refuse")
    if not reference:
        return False, None
    if not computes:
        if named is not None and native and v.reference_differences():
            raise FrameworkError(f"{v.name} differs from {v.reference} in {', '.join(v.reference_differences())}; "
                                 "build it with reference=False")
        if named is not None and native:  # the description's own, whose library does not import here
            raise FrameworkError(f"{v.name} has no {backend} reference implementation here: {v.reference} does not "
                                 "import in this environment; use the generic builder (reference=False)")
        raise FrameworkError(f"{v.name} has no {backend} reference implementation (it is native to {v.native}"
                             f"{', as ' + v.reference if v.reference else ''}); use the generic builder")
    return True, named.build


def rename(table: Mapping[str, str], layer: str, **fill) -> str:
    """A canonical layer's name in a dialect table of {regex over canonical layers: template}.

    A template formats the pattern's named groups as integers, plus `s1` (the stage + 1, for
    libraries that count the stem as stage 1) and `u0` (the unit - 1, for 0-based lists), and
    the keyword arguments (`scope=...`)."""
    for pattern, template in table.items():
        m = re.fullmatch(pattern, layer)
        if m:
            groups = {k: int(g) if g.isdigit() else g for k, g in m.groupdict().items()}
            if "s" in groups:
                groups["s1"], groups["s0"] = groups["s"] + 1, groups["s"] - 1
            if "u" in groups:
                groups["u0"] = groups["u"] - 1
            if "k" in groups:
                groups["k0"] = groups["k"] - 1
            return template.format(**groups, **fill)
    raise ValueError(f"no name for canonical layer {layer!r} in this dialect")
