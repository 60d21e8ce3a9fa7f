"""One adapter per framework, each a module with the same functions:

    build(variant, *, reference=None) -> model      the framework's own model object
    export_params(variant, model) -> {canonical name: np.ndarray}
    load_params(variant, model, params) -> None     strict (canonical.check_params first)
    run(variant, model, x, taps=None) -> {tap: np.ndarray}   NHWC float32 in, NHWC out
    framework_names(variant) -> {canonical name: this framework's parameter name}
    available() -> str | None                       None when usable, else why not

`reference=None` builds the framework's real reference implementation when the variant is
native to it (tf_slim.nets, keras.applications, a torchvision-layout module), and the
generic builder that realises the description otherwise; True or False forces one.

Adapters are imported lazily, so a job touches only the frameworks it needs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from equiv.errors import FrameworkError

FRAMEWORKS = ("slim", "keras", "torch")
_MODULES = {"slim": "equiv.frameworks.slim", "keras": "equiv.frameworks.keras", "torch": "equiv.frameworks.torch"}


def adapter(name: str) -> ModuleType:
    if name not in _MODULES:
        raise FrameworkError(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}")
    module = importlib.import_module(_MODULES[name])
    why = module.available()
    if why:
        raise FrameworkError(f"framework {name!r} is not usable here: {why}")
    return module


def parse_frameworks(text: str | list[str] | tuple[str, ...]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [s.strip() for s in items if s.strip()]
    bad = [s for s in items if s not in _MODULES]
    if bad or not items:
        raise FrameworkError(f"unknown framework {', '.join(bad) or '(none)'}; choose from {', '.join(FRAMEWORKS)}")
    return list(dict.fromkeys(items))
