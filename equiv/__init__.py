"""equiv: prove that a ResNet is the same network in TF-slim, Keras 3 and PyTorch.

    >>> import equiv
    >>> report = equiv.check("slim/resnet_v2_50", input_size=(64, 64))
    >>> report.equivalent, report.worst_rel

Frameworks are imported only when a job needs them.
"""

from equiv.errors import EquivError, FrameworkError, ParamMismatchError, UnknownVariantError
from equiv.variants import Variant, all_variants, get, names

__version__ = "0.1.0"


def check(*args, **kwargs):
    """See `equiv.check.check`."""
    from equiv.check import check as _check

    return _check(*args, **kwargs)


def diff(*args, **kwargs):
    """See `equiv.check.diff`."""
    from equiv.check import diff as _diff

    return _diff(*args, **kwargs)


__all__ = [
    "EquivError", "FrameworkError", "ParamMismatchError", "UnknownVariantError",
    "Variant", "all_variants", "get", "names", "check", "diff",
]
