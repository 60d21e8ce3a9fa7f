"""torchvision's ResNet, for tests: the real `torchvision.models` where it imports, else a verbatim copy
of torchvision 0.29.1's torchvision/models/resnet.py (tests/torchvision_resnet.py, under its BSD
licence). Which of the two a run uses is never silent: `SOURCE` says it and why, the pytest header
prints it, and the tests that use either name it in their ids (`IMPL`).

The pinned torch 2.13.0 has no working torchvision (the only wheel on the index is a CUDA build that
fails with "operator torchvision::nms does not exist"), so the default suite uses the copy; the CI
torchvision stage (`.ci/run`, `.venv-torch214`: torch 2.14.1 + torchvision 0.29.1) uses the real one
and sets EQUIV_REQUIRE_TORCHVISION=1, so a torchvision that fails to import fails there instead of
falling back.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from equiv import canonical as C
from equiv.families.resnet import plan as P
from equiv.variants import Variant

REQUIRED = os.environ.get("EQUIV_REQUIRE_TORCHVISION") == "1"

try:
    import torchvision
    import torchvision.models
except Exception as exc:  # noqa: BLE001 - a torchvision built for another torch fails in many ways
    if REQUIRED:
        raise ImportError(f"EQUIV_REQUIRE_TORCHVISION=1 but torchvision does not import: {exc}") from exc
    torchvision = None
    REAL_ERROR: str | None = f"{type(exc).__name__}: {exc}".splitlines()[0]
else:
    REAL_ERROR = None

COPY = "verbatim copy of torchvision 0.29.1 resnet.py (tests/torchvision_resnet.py)"
if torchvision is None:
    IMPL = "tvcopy"  # short, for test ids
    SOURCE = f"{COPY}: real torchvision not importable here ({REAL_ERROR})"
else:
    IMPL = f"torchvision-{torchvision.__version__.split('+')[0]}"
    SOURCE = f"real torchvision {torchvision.__version__} ({torchvision.models.resnet.__file__})"


def copied_torchvision(v: Variant) -> nn.Module:
    """torchvision 0.29.1's resnetNN(num_classes=...), from the verbatim copy, whatever is installed."""
    from tests import torchvision_resnet

    return getattr(torchvision_resnet, v.short_name)(weights=None, num_classes=v.num_classes).eval()


def torchvision_model(v: Variant) -> nn.Module:
    """torchvision.models.<name>(weights=None, num_classes=...): the real one where it imports, else
    the verbatim copy (`SOURCE` says which)."""
    if torchvision is None:
        return copied_torchvision(v)
    return getattr(torchvision.models, v.short_name)(weights=None, num_classes=v.num_classes).eval()


def torchvision_taps(v: Variant, model: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every canonical tap of a torchvision ResNet, through hooks on its own modules, NHWC."""
    got: dict[str, np.ndarray] = {}
    handles = []

    def keep(*names):
        calls = iter(names)  # a block calls its one ReLU module several times, in tap order

        def hook(module, inputs, output):
            got[next(calls)] = output.detach().clone().numpy()  # before any in-place op changes it
        return hook

    def on(module, *names):
        handles.append(module.register_forward_hook(keep(*names)))

    on(model.relu, "stem/conv")
    on(model.maxpool, "stem/pool")
    for unit in P.units(v):
        block = getattr(model, f"layer{unit.stage}")[unit.index - 1]
        convs = [c.name for c in unit.convs]
        on(block.relu, *convs[:-1], unit.name)
        on(getattr(block, f"bn{len(convs)}"), convs[-1])
        if block.downsample is not None:
            on(block.downsample, f"{unit.name}/shortcut")
        else:  # an identity shortcut is the block's input
            handles.append(block.register_forward_pre_hook(
                lambda m, inputs, name=f"{unit.name}/shortcut": got.__setitem__(name, inputs[0].clone().numpy())))
    on(model.avgpool, "pool")
    on(model.fc, "logits")
    run_hooked(model, x, handles)
    got["pool"] = got["pool"].reshape(len(x), -1)
    return taps_nhwc(v, got)


def run_hooked(model: torch.nn.Module, x: np.ndarray, handles: list) -> None:
    """Run `model` on NHWC `x` once (its hooks record the taps), then remove the hooks whatever happens."""
    try:
        with torch.inference_mode():
            model(torch.from_numpy(C.nhwc_to_nchw(x)))
    finally:
        for h in handles:
            h.remove()


def taps_nhwc(v: Variant, got: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The recorded taps of `v` in network order, feature maps NHWC."""
    return {name: C.nchw_to_nhwc(got[name]) if got[name].ndim == 4 else got[name] for name in C.tap_names(v)}
