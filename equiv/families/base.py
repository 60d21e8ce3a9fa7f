"""What a network family provides: the contract every family package meets.

A family package (equiv/families/<name>/__init__.py) exposes these names, and one builder
module per backend, equiv/families/<name>/<backend>.py, that meets `Builder`. Generic code
reaches them only through equiv.families and equiv.canonical; tests/families/test_contract.py
checks every registered family against this.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Mapping, Protocol

import numpy as np

from equiv.variants import Variant


class Plan(Protocol):
    """The family's plan module: everything derived from a description without a framework."""

    def param_shapes(self, v: Variant) -> dict[str, tuple[int, ...]]: ...
    def tap_names(self, v: Variant) -> list[str]: ...
    def output_tap(self, v: Variant) -> str: ...
    def tap_depths(self, v: Variant) -> dict[str, int]: ...
    def tap_shapes(self, v: Variant, height: int, width: int) -> dict[str, tuple[int, ...]]: ...
    def flops(self, v: Variant, height: int, width: int) -> int: ...
    def min_body_size(self, v: Variant) -> int: ...


class Family(Protocol):
    """A family package."""

    Description: type[Variant]  # its description type
    plan: Plan
    # The numpy reference: segments(v, params, *, bn, dtype, convolve) -> [(tap, input tap, fn)],
    # inference_bn(v, params); equiv.reference chains the segments.
    reference: ModuleType
    zoo: ModuleType  # registers its named networks on import

    def initial_params(self, v: Variant, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random He-scaled parameters before BatchNorm calibration (equiv.weights)."""


class Builder(Protocol):
    """equiv/families/<family>/<backend>.py: the family realised in one backend.

    The backend's adapter (equiv/frameworks/<backend>.py) does everything else (parameters in
    and out, running, releasing, files) through these."""

    def build(self, v: Variant, *, reference: bool | None = None) -> Any:
        """A model computing `v` in eval mode: the library's own code where `reference` is not
        False and `v.built_by()` names it, otherwise equiv's generic builder."""

    def framework_names(self, v: Variant) -> Mapping[str, str]:
        """canonical parameter name -> the backend's name for it (the dialect of `v.reference`'s
        library, or equiv's generic scheme)."""
