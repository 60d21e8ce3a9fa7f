"""An exported ONNX graph as a port source (`equiv port --from exported.onnx`, issue 18): real
`torch.onnx.export(..., dynamo=False)` output of equiv's torchvision-layout module (torchvision/resnet18,
seeded weights, 32x32, batch 1), ported to torch, Keras and TF-slim files and checked against the module:

* TrainingMode.PRESERVE (BatchNormalization nodes kept): every written parameter is the module's, bit for
  bit (the torch file read back with torch.load, the Keras and slim files with equiv.load_weights, against
  the module's own state_dict);
* eval mode (BatchNorm folded into the convs by the exporter): refused (exit 2, one line naming the file
  and the first folded layer, nothing written) unless --unfold-bn; with it, the written file's logits,
  computed by its own framework, are the module's (torch) within the float32 tolerance, and `--verify`
  compares the written file with the export itself (ONNX Runtime) at every tap.

native=equiv.frameworks.torch.build (torchvision layout) exported by torch.onnx.export; the ported files
run in torch, Keras 3 and TF-slim (equiv's builds of the variant, loading the written file).
Default run: the torch target, both modes, and the CLI refusal (~10 s); the Keras and slim targets are
`slow` (the default run covers their writers from canonical parameters in tests/test_port.py, and the
reading they share here).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

import equiv  # noqa: E402
from equiv import canonical as C  # noqa: E402
from equiv import compare, weights  # noqa: E402
from equiv.cli import main  # noqa: E402
from equiv.errors import EquivError  # noqa: E402
from equiv.frameworks import torch as T  # noqa: E402
from equiv.porting import run_file  # noqa: E402
from equiv.variants import get  # noqa: E402

V = get("torchvision/resnet18")
SIZE = (32, 32)
SUFFIX = {"torch": ".pt", "keras": ".weights.h5", "slim": ".ckpt"}


class Wrap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


@pytest.fixture(scope="module")
def module():
    m = T.build(V)
    T.load_params(V, m, weights.random_params(V, 0))
    return m.eval()


@pytest.fixture(scope="module")
def exports(module, tmp_path_factory):
    """{mode: path} of the module's export in eval mode (folded) and with TrainingMode.PRESERVE."""
    folder = tmp_path_factory.mktemp("exports")
    out = {}
    for mode in ("EVAL", "PRESERVE"):
        f = io.BytesIO()
        torch.onnx.export(Wrap(module).eval(), torch.zeros(1, 3, *SIZE), f, dynamo=False,
                          training=getattr(torch.onnx.TrainingMode, mode))
        out[mode] = folder / f"resnet18_{mode.lower()}.onnx"
        out[mode].write_bytes(f.getvalue())
    return out


def module_state(module) -> dict[str, np.ndarray]:
    return {k: t.detach().numpy() for k, t in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def module_logits(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(C.nhwc_to_nchw(x).copy())).numpy()


def _port_preserve_bit_exact(module, exports, tmp_path, fw):
    target = tmp_path / f"ported{SUFFIX[fw]}"
    equiv.port(V, exports["PRESERVE"], target)
    expected = T.state_to_canonical(V, module_state(module), "module")
    if fw == "torch":  # read back with torch's own loader: the module's state_dict, bit for bit
        state = torch.load(target, weights_only=True)
        assert set(k for k in state if not k.endswith("num_batches_tracked")) == set(module_state(module))
        for k, a in module_state(module).items():
            assert np.array_equal(state[k].numpy(), a), k
    got = equiv.load_weights(V, target)
    assert set(got) == set(expected)
    for name, a in expected.items():
        assert np.array_equal(got[name], a), name


def test_a_preserve_export_ports_to_torch_bit_exactly(module, exports, tmp_path):
    """native=equiv.frameworks.torch.build exported with TrainingMode.PRESERVE -> equiv port -> .pt."""
    _port_preserve_bit_exact(module, exports, tmp_path, "torch")


@pytest.mark.slow
@pytest.mark.parametrize("fw", ["keras", "slim"])
def test_a_preserve_export_ports_to_keras_and_slim_bit_exactly(module, exports, tmp_path, fw):
    """native=equiv.frameworks.torch.build exported with PRESERVE -> .weights.h5 (Keras) / .ckpt (TF Saver).
    Slow; the default run covers the torch target and the shared reading."""
    _port_preserve_bit_exact(module, exports, tmp_path, fw)


def _port_folded_logits(module, exports, tmp_path, fw):
    target = tmp_path / f"unfolded{SUFFIX[fw]}"
    result = equiv.port(V, exports["EVAL"], target, unfold_bn=True, verify=True, batch=2)
    assert result.report.equivalent
    assert [r.name for r in result.report.taps] == C.tap_names(V)  # the export maps every tap
    assert any("folded BatchNorm into the conv in 20 layers" in n for n in result.report.notes)
    assert any("exported graph itself" in n for n in result.report.notes)
    x = weights.random_input(V, 2, *SIZE, seed=3)
    got = run_file(V, target, fw, x, "logits")["logits"]
    want = module_logits(module, x)
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    assert rel <= compare.tap_tolerances(V)["logits"], rel
    params = equiv.load_weights(V, target)  # written unfolded: an identity BatchNorm holding the folded bias
    assert np.array_equal(params["stem/conv/bn/gamma"], np.ones(64, np.float32))
    assert np.array_equal(params["stem/conv/bn/moving_mean"], np.zeros(64, np.float32))
    assert not np.array_equal(params["stem/conv/kernel"],
                              T.state_to_canonical(V, module_state(module), "m")["stem/conv/kernel"])


def test_a_folded_export_ports_to_torch_with_unfold_bn(module, exports, tmp_path):
    """native=equiv.frameworks.torch.build exported in eval mode (BatchNorm folded) -> port --unfold-bn
    -> .pt run in torch: the module's logits; --verify: the export (ONNX Runtime) vs the file (torch)."""
    _port_folded_logits(module, exports, tmp_path, "torch")


@pytest.mark.slow
@pytest.mark.parametrize("fw", ["keras", "slim"])
def test_a_folded_export_ports_to_keras_and_slim_with_unfold_bn(module, exports, tmp_path, fw):
    """As the torch test, to Keras and TF-slim files run in their frameworks. Slow; the default run
    covers the torch target."""
    _port_folded_logits(module, exports, tmp_path, fw)


def test_a_folded_export_is_refused_without_unfold_bn(exports, tmp_path, capsys):
    """exit 2, one line naming the file and the first folded layer, nothing written; the API raises."""
    target = tmp_path / "out.pt"
    rc = main(["port", "torchvision/resnet18", "--from", str(exports["EVAL"]), "--to", str(target), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert str(exports["EVAL"]) in err[0] and "first: stem/conv" in err[0] and "--unfold-bn" in err[0]
    assert not target.exists() and not list(tmp_path.iterdir())
    with pytest.raises(EquivError, match="folded BatchNorm into the conv in 20 layers"):
        equiv.load_weights(V, exports["EVAL"])
    # with the option, the CLI writes it and verifies it against the export
    rc = main(["port", "torchvision/resnet18", "--from", str(exports["EVAL"]), "--to", str(target), "--unfold-bn",
               "--verify", "--batch", "1", "--json", str(tmp_path / "r.json"), "-q"])
    assert rc == 0 and target.exists()
    report = json.loads((tmp_path / "r.json").read_text())["verify"]
    assert report["equivalent"] and len(report["taps"]) == len(C.tap_names(V))


def test_an_export_of_another_network_is_named_as_such(exports, tmp_path):
    """Read as slim/resnet_v1_50, the export's parameters do not fit: what differs, and what it looks like."""
    for mode in ("PRESERVE", "EVAL"):  # a folded export too: which network it is, whatever --unfold-bn
        with pytest.raises(EquivError, match="counterpart of stage1/unit1/shortcut .*looks like torchvision/resnet18"):
            equiv.load_weights("slim/resnet_v1_50", exports[mode])
    with pytest.raises(EquivError, match=r"takes 32x32 inputs only: pass `input_size=\(32, 32\)`"):
        equiv.port(V, exports["PRESERVE"], tmp_path / "x.pt", verify=True, input_size=(64, 64))
    assert not (tmp_path / "x.pt").exists()
