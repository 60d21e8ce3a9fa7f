"""An exported ONNX graph as a port source (`equiv port --from exported.onnx`, issue 18): real
`torch.onnx.export` output of equiv's torchvision-layout module (torchvision/resnet18, seeded weights,
32x32, batch 1), from both of torch's exporters (tests/onnx_exports.py; the ids say which: export=
torchscript-eval, torchscript-preserve, dynamo-optimize, dynamo-plain), ported to torch, Keras and TF-slim
files and checked against the module:

* BatchNorm kept (TorchScript's TrainingMode.PRESERVE; the dynamo exporter with optimize=False): every
  written parameter is the module's, bit for bit (the torch file read back with torch.load, the Keras and
  slim files with equiv.load_weights, against the module's own state_dict);
* BatchNorm folded into the convs (the TorchScript exporter in eval mode; the dynamo exporter's optimizer,
  torch 2.13's default): refused (exit 2, one line naming the file, the first folded layer and the export
  option that keeps BatchNorm, nothing written) unless --unfold-bn; with it, the written file's logits,
  computed by its own framework, are the module's (torch) within the float32 tolerance, and `--verify`
  compares the written file with the export itself (ONNX Runtime) at every tap. `equiv run` takes the
  same option.

native=equiv.frameworks.torch.build (torchvision layout) exported by torch.onnx.export; the ported files
run in torch, Keras 3 and TF-slim (equiv's builds of the variant, loading the written file).
Default run: the torch target, every exporter, and the CLI refusal; the Keras and slim targets are
`slow` (the default run covers their writers from canonical parameters in tests/test_port.py, and the
reading they share here).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


import equiv  # noqa: E402
from equiv import canonical as C  # noqa: E402
from equiv import compare, weights  # noqa: E402
from equiv.cli import main  # noqa: E402
from equiv.errors import EquivError  # noqa: E402
from equiv.frameworks import torch as T  # noqa: E402
from equiv.porting import run_file  # noqa: E402
from equiv.variants import get  # noqa: E402
from tests import onnx_exports as X  # noqa: E402

V = get("torchvision/resnet18")
SIZE = (32, 32)
SUFFIX = {"torch": ".pt", "keras": ".weights.h5", "slim": ".ckpt"}


KEPT = ("torchscript-preserve", "dynamo-plain")  # BatchNorm and the state_dict's names kept
FOLDED = ("torchscript-eval", "dynamo-optimize")  # BatchNorm folded into the convs


@pytest.fixture(scope="module")
def module():
    m = T.build(V)
    T.load_params(V, m, weights.random_params(V, 0))
    return m.eval()


@pytest.fixture(scope="module")
def exports(module, tmp_path_factory):
    """exports(mode): the path of the module's export by that exporter (tests/onnx_exports.py), each made
    when first asked for."""
    folder = tmp_path_factory.mktemp("exports")
    made = {}

    def path(mode):
        if mode not in made:
            made[mode] = folder / f"resnet18_{mode}.onnx"
            onnx.save_model(X.export(module, SIZE, mode), str(made[mode]))
        return made[mode]
    return path


def module_state(module) -> dict[str, np.ndarray]:
    return {k: t.detach().numpy() for k, t in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def module_logits(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(C.nhwc_to_nchw(x).copy())).numpy()


def _port_preserve_bit_exact(module, exports, tmp_path, fw, mode="torchscript-preserve"):
    target = tmp_path / f"ported{SUFFIX[fw]}"
    equiv.port(V, exports(mode), target)
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


@pytest.mark.parametrize("mode", [X.param(m) for m in KEPT])
def test_a_preserve_export_ports_to_torch_bit_exactly(module, exports, tmp_path, mode):
    """native=equiv.frameworks.torch.build exported with BatchNorm kept -> equiv port -> .pt."""
    _port_preserve_bit_exact(module, exports, tmp_path, "torch", mode)


@pytest.mark.slow
@pytest.mark.parametrize("fw", ["keras", "slim"])
def test_a_preserve_export_ports_to_keras_and_slim_bit_exactly(module, exports, tmp_path, fw):
    """native=equiv.frameworks.torch.build exported with PRESERVE -> .weights.h5 (Keras) / .ckpt (TF Saver).
    Slow; the default run covers the torch target and the shared reading."""
    _port_preserve_bit_exact(module, exports, tmp_path, fw)


def _port_folded_logits(module, exports, tmp_path, fw, mode="torchscript-eval"):
    target = tmp_path / f"unfolded{SUFFIX[fw]}"
    result = equiv.port(V, exports(mode), target, unfold_bn=True, verify=True, batch=2)
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


@pytest.mark.parametrize("mode", [X.param("torchscript-eval"), X.param("dynamo-optimize", pytest.mark.slow)])
def test_a_folded_export_ports_to_torch_with_unfold_bn(module, exports, tmp_path, mode):
    """native=equiv.frameworks.torch.build exported with BatchNorm folded -> port --unfold-bn -> .pt run in
    torch: the module's logits; --verify: the export (ONNX Runtime) vs the file (torch). The dynamo case is
    slow: the default run ports and verifies it in the refusal test and checks its logits through `run`."""
    _port_folded_logits(module, exports, tmp_path, "torch", mode)


@pytest.mark.slow
@pytest.mark.parametrize("fw", ["keras", "slim"])
def test_a_folded_export_ports_to_keras_and_slim_with_unfold_bn(module, exports, tmp_path, fw):
    """As the torch test, to Keras and TF-slim files run in their frameworks. Slow; the default run
    covers the torch target."""
    _port_folded_logits(module, exports, tmp_path, fw)


@pytest.mark.parametrize("mode", [X.param(m) for m in FOLDED])
def test_a_folded_export_is_refused_without_unfold_bn(exports, tmp_path, capsys, mode):
    """exit 2, one line naming the file, the first folded layer and how to export with BatchNorm kept
    (that exporter's option), nothing written; the API raises."""
    source = exports(mode)
    target = tmp_path / "out.pt"
    rc = main(["port", "torchvision/resnet18", "--from", str(source), "--to", str(target), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert str(source) in err[0] and "first: stem/conv" in err[0] and "--unfold-bn" in err[0]
    keep = "optimize=False" if mode.startswith("dynamo") else "TrainingMode.PRESERVE"
    assert keep in err[0], err[0]
    assert not target.exists() and not list(tmp_path.iterdir())
    with pytest.raises(EquivError, match="folded BatchNorm into the conv in 20 layers"):
        equiv.load_weights(V, source)
    # with the option, the CLI writes it and verifies it against the export
    rc = main(["port", "torchvision/resnet18", "--from", str(source), "--to", str(target), "--unfold-bn",
               "--verify", "--batch", "1", "--json", str(tmp_path / "r.json"), "-q"])
    assert rc == 0 and target.exists()
    report = json.loads((tmp_path / "r.json").read_text())["verify"]
    assert report["equivalent"] and len(report["taps"]) == len(C.tap_names(V))


def test_an_export_of_another_network_is_named_as_such(exports, tmp_path):
    """Read as slim/resnet_v1_50, the export's parameters do not fit: what differs, and what it looks like."""
    for mode in ("torchscript-preserve", "torchscript-eval"):  # a folded export too, whatever --unfold-bn
        with pytest.raises(EquivError, match="counterpart of stage1/unit1/shortcut .*looks like torchvision/resnet18"):
            equiv.load_weights("slim/resnet_v1_50", exports(mode))
    with pytest.raises(EquivError, match=r"takes 32x32 inputs only: pass `input_size=\(32, 32\)`"):
        equiv.port(V, exports("torchscript-preserve"), tmp_path / "x.pt", verify=True, input_size=(64, 64))
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("mode", [X.param("dynamo-optimize")])
def test_equiv_run_takes_a_folded_export_with_unfold_bn_only(module, exports, tmp_path, capsys, mode):
    """`equiv run --weights exported.onnx`: refused as `port` refuses it (exit 2, one line, no output
    written); with --unfold-bn, the logits of the export's parameters run in torch are the module's
    (computed by the module itself in PyTorch) within the float32 tolerance."""
    source = exports(mode)
    x = weights.random_input(V, 2, *SIZE, seed=4)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    argv = ["run", "torchvision/resnet18", "--weights", str(source), "--framework", "torch",
            "--input", str(tmp_path / "x.npy"), "--output", str(out)]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(source) in err[0] and "--unfold-bn" in err[0], err
    assert not out.exists()
    assert main([*argv, "--unfold-bn"]) == 0
    got = np.load(out)["logits"]
    want = module_logits(module, x)
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    assert rel <= compare.tap_tolerances(V)["logits"], rel
