"""The registry of backends: one `Record` line per backend; every list of backends derives from it.

Each backend is a module with the same functions (the contract: `equiv.frameworks.base.Backend`).
Adapters are imported lazily, so a job touches only the frameworks it needs, and a backend that
cannot be used here is reported with the reason (`adapter()`, `equiv --version`), never a crash.

To add a backend: write `equiv/frameworks/<name>.py` to the contract and add its line below.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from types import ModuleType
from typing import Any

from equiv.errors import FrameworkError
from equiv.frameworks.base import MB, Record

# Runtime sizes: resident once imported, measured on Linux x86-64 with tensorflow-cpu 2.21, torch 2.13 CPU;
# onnxruntime 1.30: 30 MB imported, 47 MB with its first session run (/proc/self/status VmRSS).
REGISTRY: dict[str, Record] = {r.name: r for r in (
    Record("slim", "equiv.frameworks.slim", "tensorflow", 600 * MB, library="tf_slim",
           model_module="equiv.frameworks.slim"),
    Record("keras", "equiv.frameworks.keras", "tensorflow", 600 * MB, library="keras", model_module="keras",
           other_models=("tf_keras",)),
    Record("torch", "equiv.frameworks.torch", "torch", 200 * MB, library="torch", model_module="torch"),
    Record("onnx", "equiv.frameworks.onnx", "onnxruntime", 50 * MB, library="onnxruntime", model_module="onnx"),
)}
FRAMEWORKS = tuple(REGISTRY)  # in the order of the registry: the default of every command


def _unknown(names) -> FrameworkError:
    return FrameworkError(f"unknown framework {', '.join(names) or '(none)'}; choose from {', '.join(FRAMEWORKS)}")


def module(name: str) -> ModuleType:
    """The backend's module, usable or not (its `available()` says)."""
    if name not in REGISTRY:
        raise _unknown([repr(name)])
    return importlib.import_module(REGISTRY[name].module)


# Set by the `equiv` command (cli.run), never by the library: see adapter().
FREEZE_IMPORTS = False


def adapter(name: str) -> ModuleType:
    """The backend's module, or FrameworkError saying why it cannot be used here.

    In the `equiv` command (FREEZE_IMPORTS), what importing a framework made (some 470 000 objects
    for TensorFlow, Keras and PyTorch, alive until the process ends) is moved out of the garbage
    collector's sight (gc.freeze): each full collection then scans only what a job made since,
    in milliseconds instead of a quarter of a second. A library caller's process is left alone."""
    fresh = REGISTRY[name].module not in sys.modules if name in REGISTRY else False
    mod = module(name)
    why = mod.available()
    if why:
        raise FrameworkError(f"framework {name!r} is not usable here: {why}")
    if fresh and FREEZE_IMPORTS:
        gc.freeze()
    return mod


def parse_frameworks(text: str | list[str] | tuple[str, ...]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [s.strip() for s in items if s.strip()]
    bad = [s for s in items if s not in REGISTRY]
    if bad or not items:
        raise _unknown(bad)
    return list(dict.fromkeys(items))


def imported() -> list[str]:
    """The backends whose adapter a job has imported so far (nothing is imported to answer)."""
    return [name for name, rec in REGISTRY.items() if rec.module in sys.modules]


def backend_of(obj: Any) -> str | None:
    """The backend whose model `obj` is, else None. Imports no framework: a backend is asked
    only when its model module is already loaded (no object of it can exist otherwise)."""
    for name, rec in REGISTRY.items():
        if any(m in sys.modules for m in (rec.model_module, *rec.other_models)) and module(name).owns(obj):
            return name
    return None


def trim() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def loaded(name: str, variant, params=None, *, reference: bool | None = None,
           phase: Callable[[str], Any] | None = None) -> Iterator[Any]:
    """Build `variant` in backend `name`, load `params` (canonical, if given), yield the model,
    and release it on the way out, giving its memory back to the system.

    `phase`, if given, is a context manager factory timing "build" and "port" (checking._Timer)."""
    timed = phase or (lambda _: nullcontext())
    ad = adapter(name)
    with timed("build"):
        model = ad.build(variant, reference=reference)
    try:
        if params is not None:
            with timed("port"):
                ad.load_params(variant, model, params)
        yield model
    finally:
        ad.release(model)
        del model
        gc.collect()
        trim()  # a check keeps only each framework's taps: one model alive at a time (README: memory)
