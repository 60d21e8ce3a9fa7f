"""`torch.onnx.export` for tests, with both of torch's exporters. Which one a test runs is in its id:

* `torchscript-eval`: `dynamo=False`, eval mode: the TorchScript exporter folds each BatchNorm into its conv
  (initializers `onnx::Conv_N`, nodes named by scope `/m/layer1.0/conv1/Conv`);
* `torchscript-preserve`: `dynamo=False, training=TrainingMode.PRESERVE`: BatchNormalization nodes and the
  state_dict's names kept;
* `dynamo-optimize`: `dynamo=True` as torch 2.13 runs it by default (torch.export, onnxscript, its optimizer):
  each eval-mode BatchNorm fused into its conv by onnxscript's FuseBatchNormIntoConv, the fused kernel still
  under the conv's state_dict name (`m.conv1.weight`), nodes `node_Conv_N` with their module scopes in the
  metadata (`pkg.torch.onnx.name_scopes`);
* `dynamo-plain`: `dynamo=True, optimize=False`: BatchNormalization kept, every parameter under its
  state_dict name, a conv without bias given zeros computed in the graph (Shape, Expand, CastLike).

The dynamo exporter needs onnxscript (scripts/venv.sh installs it, pinned in constraints.txt): without it
the dynamo cases skip, saying so.
"""

from __future__ import annotations

import importlib.util
import io

import pytest

KEEPS_BN = {"torchscript-eval": False, "torchscript-preserve": True, "dynamo-optimize": False, "dynamo-plain": True}
EXPORTERS = tuple(KEEPS_BN)
DYNAMO_MISSING = None if importlib.util.find_spec("onnxscript") else \
    "onnxscript is not installed: torch.onnx.export(dynamo=True) needs it (scripts/venv.sh installs it)"


def param(mode: str, *marks):
    """`mode` as a pytest parameter, skipped with the reason where the dynamo exporter cannot run."""
    skip = [pytest.mark.skip(reason=DYNAMO_MISSING)] if mode.startswith("dynamo") and DYNAMO_MISSING else []
    return pytest.param(mode, marks=[*skip, *marks], id=mode)


def wrap(module):
    """equiv's module takes an optional `record` argument the exporters cannot feed: a plain forward
    around it (node scopes then start with `m`)."""
    import torch

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)

    return Wrap(module).eval()


def export(module, size, mode: str, *, wrapped: bool = True):
    """The ONNX ModelProto of `module` (eval mode) exported at `size` (H, W), batch 1, by `mode`."""
    import onnx
    import torch

    if mode.startswith("dynamo") and DYNAMO_MISSING:
        pytest.skip(DYNAMO_MISSING)
    m = wrap(module) if wrapped else module.eval()
    x = torch.zeros(1, 3, *size)
    if mode.startswith("torchscript"):
        f = io.BytesIO()
        training = torch.onnx.TrainingMode.PRESERVE if mode.endswith("preserve") else torch.onnx.TrainingMode.EVAL
        torch.onnx.export(m, (x,), f, dynamo=False, training=training)
        return onnx.load_from_string(f.getvalue())
    program = torch.onnx.export(m, (x,), dynamo=True, optimize=mode == "dynamo-optimize", verbose=False)
    return program.model_proto
