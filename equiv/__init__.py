"""equiv: prove that a ResNet is the same network in TF-slim, Keras 3 and PyTorch.

    >>> import equiv
    >>> report = equiv.check("slim/resnet_v2_50", input_size=(64, 64))  # default: 224x224, as the CLI
    >>> report.equivalent, report.worst_rel

Frameworks are imported only when a job needs them.
"""

from equiv.errors import EquivError, FrameworkError, ParamMismatchError, UnknownVariantError
from equiv.variants import Variant, all_variants, get, names

__version__ = "0.1.0"


def check(*args, **kwargs):
    """See `equiv.checking.check`."""
    from equiv.checking import check as _check

    return _check(*args, **kwargs)


def diff(*args, **kwargs):
    """See `equiv.checking.diff`."""
    from equiv.checking import diff as _diff

    return _diff(*args, **kwargs)


def port(*args, **kwargs):
    """See `equiv.porting.port`: read a weight file, write it in another format."""
    from equiv.porting import port as _port

    return _port(*args, **kwargs)


def load_weights(variant, path, format=None, **kwargs):  # dialect="hf": the file in that library's names
    """Canonical parameters of `variant` from a weight file (see `equiv.porting.load_weights`)."""
    from equiv.porting import load_weights as _load

    return _load(variant, path, format, **kwargs)


def build(variant, framework, weights=None, **kwargs):
    """The framework's own model object for `variant`, optionally with weights (path or dict)."""
    from equiv.porting import build as _build

    return _build(variant, framework, weights, **kwargs)


def detect(path, format=None, **kwargs):
    """What a weight file is: its format, dialects and the variants it loads as (see `equiv.porting.detect`)."""
    from equiv.porting import detect as _detect

    return _detect(path, format, **kwargs)


__all__ = [
    "EquivError", "FrameworkError", "ParamMismatchError", "UnknownVariantError",
    "Variant", "all_variants", "get", "names", "check", "diff", "port", "load_weights", "build", "detect",
]
