"""The backend contract: what every framework adapter provides, and the record that registers it.

A backend is a module (`equiv/frameworks/<name>.py`) with the functions of `Backend` below, plus
one `Record` line in `equiv.frameworks.REGISTRY`. Nothing outside the backend's module knows
which library it wraps: generic code asks the registry (`equiv.frameworks`) and this contract.
`tests/frameworks/test_contract.py` checks every registered backend against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from equiv.variants import Variant

MB = 1024 * 1024

# (run(x, taps) -> {tap: NHWC array}, taps it gives or None for all, its only input size or None)
Runner = tuple[Callable[[np.ndarray, list[str]], dict[str, np.ndarray]], list[str] | None, tuple[int, int] | None]


@dataclass(frozen=True)
class Record:
    """What is known of a backend without importing it (the registry's one line per backend).

    * name: the backend's name on the command line and in reports.
    * module: the adapter module, imported on first use.
    * runtime: the library that executes it; backends sharing one (slim and Keras on TensorFlow)
      pay its memory once (`equiv.memory.estimate`).
    * runtime_bytes: resident size of that runtime once imported, measured (Linux x86-64).
    * library: the module users import to use it (the pytest plugin's `equiv_<name>` fixture).
    * model_module: a module that is imported whenever a model object of this backend can
      exist, so that recognising a user's object never imports a framework.
    * other_models: modules of other libraries whose model objects this backend reads too (Keras:
      tf_keras, whose Keras 2 models name their layers alike), each asked only once imported.
    """

    name: str
    module: str
    runtime: str
    runtime_bytes: int
    library: str
    model_module: str
    other_models: tuple[str, ...] = ()


@runtime_checkable
class Backend(Protocol):
    """The functions of an adapter module; every one takes the variant first.

    Build, naming and parameters:
        build(variant, *, reference=None) -> model
            the framework's own model object; `reference=None` builds the real library's
            network when the variant is native here, else the generic builder (True/False force one)
        framework_names(variant) -> {canonical name: this framework's parameter name}
        export_params(variant, model) -> {canonical name: float32 array}
        load_params(variant, model, params) -> None          strict (canonical.check_params first)
    Running:
        run(variant, model, x, taps=None) -> {tap: NHWC float32 array}
        release(model) -> None       free what the model holds (a Session, a graph); idempotent
    A user's model object:
        owns(obj) -> bool            obj is a model of this backend (checked without importing)
        model_params(variant, model) -> canonical params   read as `variant`; ParamMismatchError
        model_names(model) -> set of the model's parameter names, in this framework's naming
        model_runner(variant, model) -> Runner              its own forward pass, tapped
        NAMING: str                  how a foreign model's parameters must be named to be read
    Environment:
        available() -> None, or why the backend cannot be used here
        versions() -> {library: version} of what runs it
        engine() -> the library that runs the matrix products now (bench: one ceiling each)
        device_name(device) -> the accelerator `device` ("cuda") means here, or None
        thread_pools() -> its own thread pools (threadpoolctl's fields), for the record of a machine
        forward_fn(variant, model, x, *, device, dtype, **path) -> callable for timing
        matmul_fn(n, *, device, dtype) -> callable: one n x n matrix product
        FAST_PATHS: {path name: options for forward_fn}
    A network family realises itself in this backend through its builder module
    (equiv/families/<family>/<backend>.py), which provides what BUILDER names:
        BUILDER: the functions that module must define, beyond build, framework_names and DIALECTS
    """

    NAMING: str
    FAST_PATHS: Mapping[str, Mapping[str, Any]]
    BUILDER: tuple[str, ...]

    def available(self) -> str | None: ...
    def versions(self) -> dict[str, str]: ...
    def engine(self) -> str: ...
    def device_name(self, device: str) -> str | None: ...
    def thread_pools(self) -> list[dict]: ...
    def build(self, variant: Variant, *, reference: bool | None = None) -> Any: ...
    def framework_names(self, variant: Variant) -> dict[str, str]: ...
    def export_params(self, variant: Variant, model: Any) -> dict[str, np.ndarray]: ...
    def load_params(self, variant: Variant, model: Any, params: Mapping[str, np.ndarray]) -> None: ...
    def run(self, variant: Variant, model: Any, x: np.ndarray, taps=None) -> dict[str, np.ndarray]: ...
    def release(self, model: Any) -> None: ...
    def owns(self, obj: Any) -> bool: ...
    def model_params(self, variant: Variant, model: Any) -> dict[str, np.ndarray]: ...
    def model_names(self, model: Any) -> set[str]: ...
    def model_runner(self, variant: Variant, model: Any) -> Runner: ...
    def forward_fn(self, variant: Variant, model: Any, x: np.ndarray, *, device: str = "cpu",
                   dtype: str = "float32", **path: Any) -> Callable[[], Any]: ...
    def matmul_fn(self, n: int, *, device: str = "cpu", dtype: str = "float32") -> Callable[[], Any]: ...


def dist_version(name: str) -> str:
    """An installed distribution's version, or "not installed"."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
