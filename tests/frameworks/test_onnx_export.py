"""Did the export change my network? Real `torch.onnx.export` output of equiv's torchvision-layout module
(torchvision/resnet18, seeded weights, 32x32, batch 2), from both of torch's exporters (tests/onnx_exports.py;
each test's id says which: export=torchscript-eval, torchscript-preserve, dynamo-optimize, dynamo-plain),
read layer by layer by equiv.frameworks.onnx_export against the module itself (torch,
`equiv.frameworks.torch.build`) and against the variant built natively (torch): with BatchNorm folded into
the convs (the TorchScript exporter in eval mode; the dynamo exporter's optimizer, torch 2.13's default) and
kept (TrainingMode.PRESERVE; the dynamo exporter with optimize=False). Each side runs its real framework:
the export in ONNX Runtime, the module in PyTorch. Planted faults (a conv's weight in the exported
initializer, a BatchNorm epsilon in the exported module) are caught at their layer; a tap the graph has no
counterpart for is named in the notes.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


from equiv import canonical as C  # noqa: E402
from equiv import weights  # noqa: E402
from equiv.errors import EquivError  # noqa: E402
from equiv.frameworks import onnx_export  # noqa: E402
from equiv.frameworks import torch as T  # noqa: E402
from equiv.testing import NotEquivalentError, assert_equivalent  # noqa: E402
from equiv.variants import get  # noqa: E402
from tests import onnx_exports as X  # noqa: E402

V = get("torchvision/resnet18")
SIZE = (32, 32)
KEPT = ("torchscript-preserve", "dynamo-plain")  # the exports that keep BatchNorm and the state_dict's names
SLOW = pytest.mark.slow  # a dynamo case whose reading the default run covers in another test of this file


def export(module, mode: str):
    return X.export(module, SIZE, mode)


@pytest.fixture(scope="module")
def module():
    m = T.build(V)
    T.load_params(V, m, weights.random_params(V, 0))
    return m


@pytest.fixture(scope="module")
def exports(module):
    """Each exporter's export of `module`, made once for the module's tests (when first asked for)."""
    made = {}

    def get_export(mode):
        if mode not in made:
            made[mode] = export(module, mode)
        return made[mode]
    return get_export


@pytest.fixture(params=[X.param(m) for m in X.EXPORTERS])
def exported(request, exports):
    return request.param, exports(request.param)


def test_both_export_modes_agree_at_every_tap(module, exported, tmp_path):
    """native=equiv.frameworks.torch.build (torchvision layout) vs its torch.onnx.export in ONNX Runtime."""
    mode, proto = exported
    reading = onnx_export.read(V, proto)
    assert reading.missing == {}
    assert reading.dynamo == mode.startswith("dynamo")
    report = assert_equivalent(module, proto, variant=V, input_size=SIZE, batch=2)
    assert [r.name for r in report.taps] == C.tap_names(V)  # every tap, none dropped
    convs = [c for c in reading.params if c.endswith(".weight") and "fc" not in c]
    if not X.KEEPS_BN[mode]:  # BatchNorm folded: said, and its parameters left out of the one-by-one comparison
        assert len(reading.folded) == 20 and "stem/conv" in reading.folded
        assert any("folded BatchNorm into the conv in 20 layers" in n for n in report.notes)
        assert any("as held: 2, 0 differ" in n for n in report.notes)  # fc only
    else:  # state_dict names kept: every parameter compared one by one
        assert reading.folded == [] and reading.named and convs
        assert any(f"as held: {len(C.param_shapes(V))}, 0 differ" in n for n in report.notes)
    # the file, against the variant built natively in torch with the export's weights
    path = tmp_path / "exported.onnx"
    onnx.save_model(proto, str(path))
    report = assert_equivalent(str(path), "torchvision/resnet18", input_size=SIZE, batch=2)
    assert len(report.taps) == len(C.tap_names(V))


def _with_initializer(proto, module: str, norm: str, change):
    """A copy of `proto` with the kernel of conv module `module` (or, folded into it by the dynamo
    exporter, of its norm module `norm`) changed; the Conv found by its scopes (the TorchScript exporter's
    node name, the dynamo exporter's metadata)."""
    p = copy.deepcopy(proto)
    (node,) = onnx_export.ExportGraph(p).conv_of(module, norm)
    init = next(i for i in p.graph.initializer if i.name == node.input[1])
    from onnx import numpy_helper

    init.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(init).copy()), init.name))
    return p


def test_a_changed_conv_weight_in_the_export_is_caught_at_its_layer(module, exported):
    """native=equiv.frameworks.torch.build vs its export with one output channel of layer2.0.conv1 scaled."""
    mode, proto = exported

    def scale(w):
        w[3] *= 1.01
        return w
    bad = _with_initializer(proto, "m.layer2.0.conv1", "m.layer2.0.bn1", scale)
    with pytest.raises(NotEquivalentError) as e:
        assert_equivalent(module, bad, variant=V, input_size=SIZE, batch=1)
    assert e.value.report.first.name == "stage2/unit1/conv1"
    assert all(r.ok for r in e.value.report.taps[:C.tap_names(V).index("stage2/unit1/conv1")])
    if X.KEEPS_BN[mode]:  # the kernel is held as it is: compared one by one too
        assert any("stage2/unit1/conv1/kernel" in n for n in e.value.report.notes)


@pytest.mark.parametrize("mode", [X.param("torchscript-preserve"), X.param("dynamo-plain", SLOW)])
def test_the_export_of_a_module_with_another_bn_epsilon_is_caught_at_that_layer(module, mode):
    """native=equiv.frameworks.torch.build vs the export of a copy whose layer3.0.bn2 has eps 1e-3."""
    changed = copy.deepcopy(module)
    changed.layer3[0].bn2.eps = 1e-3
    proto = export(changed, mode)
    with pytest.raises(NotEquivalentError) as e:
        assert_equivalent(module, proto, variant=V, input_size=SIZE, batch=1)
    assert e.value.report.first.name == "stage3/unit1/conv2"
    assert any("after stage3/unit1/conv2 has epsilon 0.001" in n for n in e.value.report.notes)


@pytest.mark.parametrize("mode", [X.param(m, *([SLOW] if m == "dynamo-plain" else [])) for m in X.EXPORTERS])
def test_a_tap_without_counterpart_is_reported_by_name(module, exports, mode):
    """An Identity planted between stage2/unit2's Add and its Relu: that unit's tap has no counterpart."""
    proto = exports(mode)
    p = copy.deepcopy(proto)
    (add,) = onnx_export.ExportGraph(p).by_module("Add", "m.layer2.1")
    relu = next(n for n in p.graph.node if n.op_type == "Relu" and add.output[0] in n.input)
    relu.input[0] = "planted"
    at = list(p.graph.node).index(add) + 1
    p.graph.node.insert(at, onnx.helper.make_node("Identity", [add.output[0]], ["planted"], name="planted"))
    onnx.checker.check_model(p)
    report = assert_equivalent(module, p, variant=V, input_size=SIZE, batch=1)
    assert "stage2/unit2" not in [r.name for r in report.taps]
    assert len(report.taps) == len(C.tap_names(V)) - 1
    assert any("no counterpart" in n and "stage2/unit2 (no Relu reads the unit's Add)" in n for n in report.notes)
    with pytest.raises(EquivError, match="stage2/unit2"):
        assert_equivalent(module, p, variant=V, input_size=SIZE, batch=1, taps=["stage2/unit2"])


def test_the_export_of_torchvisions_own_resnet_is_read_too():
    """native=torchvision.models.resnet18 (real, or the verbatim copy: tests/torchvision_layout.SOURCE)
    exported in eval mode: its relu modules and in-place add read by structure."""
    from tests import torchvision_layout as TV

    model = TV.torchvision_model(V)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.from_numpy(np.random.default_rng(abs(hash(name)) % 2**32)
                                         .uniform(0.5, 1.5, t.shape).astype(np.float32)) * (0.1 if "weight" in name
                                                                                            else 1.0))
    proto = export(model, "torchscript-eval")
    assert onnx_export.read(V, proto).missing == {}
    x = weights.random_input(V, 2, *SIZE, 0)
    report = assert_equivalent(model, proto, input_size=SIZE, batch=2, x=x, variant=V)
    assert [r.name for r in report.taps] == ["stage1/unit1", "stage1/unit2", "stage2/unit1", "stage2/unit2",
                                             "stage3/unit1", "stage3/unit2", "stage4/unit1", "stage4/unit2",
                                             "logits"]


@pytest.mark.parametrize("mode", [X.param(m) for m in KEPT])
def test_a_parameter_changed_below_the_taps_tolerance_is_named_where_names_are_kept(module, exports, mode):
    """PRESERVE / dynamo optimize=False: one running variance of the last BatchNorm changed by 5e-5 moves
    no tap beyond its tolerance, but the one-by-one comparison of the parameters held by name fails on it."""
    proto = copy.deepcopy(exports(mode))
    from onnx import numpy_helper

    init = next(i for i in proto.graph.initializer if i.name == "m.layer4.1.bn2.running_var")
    var = numpy_helper.to_array(init).copy()
    var[0] += 5e-5
    init.CopyFrom(numpy_helper.from_array(var, init.name))
    with pytest.raises(NotEquivalentError, match="parameter 'stage4/unit2/conv2/bn/moving_variance' differs") as e:
        assert_equivalent(module, proto, variant=V, input_size=SIZE, batch=1)
    assert e.value.report.first is None  # every tap agreed


def test_module_paths_from_either_exporter_and_hostile_scopes():
    """A node's module path: the dynamo exporter's scopes metadata, else the TorchScript exporter's node
    name; a scopes value that is no list of names, oversized or code (a hostile file) is ignored, never run."""
    from onnx import helper

    def node(name, scopes=None):
        n = helper.make_node("Relu", ["a"], ["b"], name=name)
        if scopes is not None:
            p = n.metadata_props.add()
            p.key, p.value = onnx_export.NAME_SCOPES, scopes
        return n

    path = onnx_export.ExportGraph._module_path
    assert path(node("node_relu_1", "['', 'm', 'm.layer1.0', 'relu_1']")) == "m.layer1.0"
    assert path(node("node_Conv_287", "['', 'm', 'm.bn1', '_native_batch_norm_legit_no_training']")) == "m.bn1"
    assert path(node("/m/layer2.0/downsample/downsample.0/Conv")) == "m.layer2.0.downsample.0"
    assert path(node("/m/layer1.0/Relu", "__import__('os').system('false')")) == "m.layer1.0"
    assert path(node("/m/fc/Gemm", "[" * 5000)) == "m.fc"
    assert path(node("/m/fc/Gemm", "[1, 2]")) == "m.fc"


def test_a_value_computed_from_the_input_is_never_read_as_a_constant():
    """ExportGraph.constant evaluates Constant/Shape/Expand/CastLike chains (the dynamo exporter's zero conv
    bias) but nothing that depends on the input's values: reading such a tensor as a parameter is an error."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    nodes = [helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])),
             helper.make_node("CastLike", ["zero", "x"], ["zero_like"]),
             helper.make_node("Constant", [], ["n"], value_ints=[5]),
             helper.make_node("Expand", ["zero_like", "n"], ["bias"]),
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Shape", ["r"], ["dyn"])]
    g = onnx_export.ExportGraph(helper.make_model(helper.make_graph(nodes, "g", [x], [])))
    assert np.array_equal(g.array("bias"), np.zeros(5, np.float32))
    assert g.constant("r") is None
    with pytest.raises(EquivError, match="r is computed from the input"):
        g.array("r")
