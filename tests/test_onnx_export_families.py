"""Did the export change my network? for every family and layout beyond issue 18's plain ResNet (tests/
frameworks/test_onnx_export.py): real `torch.onnx.export` output, with BatchNorm folded where a conv
precedes it and with BatchNorm kept, of equiv's own torch build of

* a deep stem with ResNet-D average-pool projections (timm/resnet50d's layout),
* pre-activation (v2) units, torch-style (timm/resnetv2_50) and slim's (slim/resnet_v2_50: a biased stem,
  TF SAME pads, a strided identity),
* GroupNorm with weight-standardised convs (timm/resnetv2_50x1_bit),
* VGG with and without BatchNorm (torchvision/vgg16_bn, vgg16),
* Inception v3 (torchvision/inception_v3, without its auxiliary head, which exports drop),

by both of torch's exporters (tests/onnx_exports.py; the ids say which: export=torchscript-eval,
torchscript-preserve, dynamo-optimize, dynamo-plain; the dynamo exporter's cases are slow but VGG's default
export),

each a registered variant with narrower layers (`Variant.replace`: the layout and every convention
kept, the test cheap) except Inception (slow: full width at its minimum input, 75x75).

Each side runs its real framework: the module's own forward in PyTorch (its taps recorded by equiv's
module) and the export in ONNX Runtime, read by equiv.frameworks.onnx_export; every canonical tap is
compared (none without a counterpart), and the parameters the export holds as such are the module's
bit for bit. A planted fault (one conv's kernel scaled in the exported graph) is caught at its layer.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from equiv import canonical as C  # noqa: E402
from equiv import compare, weights  # noqa: E402
from equiv.errors import EquivError  # noqa: E402
from equiv.frameworks import onnx_export  # noqa: E402
from equiv.frameworks import torch as T  # noqa: E402
from equiv.variants import get  # noqa: E402
from tests import onnx_exports as X  # noqa: E402

SMALL_RESNET = {"depths": (1, 2, 1, 1), "widths": (8, 8, 16, 16), "num_classes": 10}
CASES = {
    # id: (registered variant, narrowing, input side, slow)
    "deep_stem_resnet_d": ("timm/resnet50d", {**SMALL_RESNET, "deep_stem": (8, 8), "stem_width": 16}, 32, False),
    "preact_torch_style": ("timm/resnetv2_50", {**SMALL_RESNET, "stem_width": 16}, 32, False),
    "preact_slim": ("slim/resnet_v2_50", {**SMALL_RESNET, "stem_width": 16}, 32, False),
    "groupnorm_weight_std": ("timm/resnetv2_50x1_bit", {**SMALL_RESNET, "stem_width": 32, "norm_groups": 4}, 32,
                             False),
    "vgg_bn": ("torchvision/vgg16_bn", {"widths": (8, 16, 16, 32, 32), "fc_widths": (32, 32), "num_classes": 10,
                                        "adaptive_pool": (2, 2)}, 64, False),
    "vgg": ("torchvision/vgg16", {"widths": (8, 16, 16, 32, 32), "fc_widths": (32, 32), "num_classes": 10,
                                  "adaptive_pool": (2, 2)}, 64, False),
    "inception_v3": ("torchvision/inception_v3", {"aux_logits": False}, 75, True),
}
# the dynamo exporter's cases in the default run: VGG's reader (its flatten a Reshape there) on the default
# export; the ResNet reader's are in tests/frameworks/test_onnx_export.py (resnet18); the others are slow
DYNAMO_DEFAULT = (("vgg_bn", "dynamo-optimize"),)


def _params(case: str):
    name, change, size, slow = CASES[case]
    return pytest.param(case, marks=[pytest.mark.slow] if slow else [], id=f"{case}-native={name}")


def _cases_and_modes():
    """(case, exporter) pairs: the TorchScript exporter's for every case, the dynamo exporter's for
    DYNAMO_DEFAULT in the default run and for the others in the slow one."""
    out = []
    for case, (name, _, _, slow) in CASES.items():
        for mode in X.EXPORTERS:
            heavy = slow or (mode.startswith("dynamo") and (case, mode) not in DYNAMO_DEFAULT)
            p = X.param(mode, *([pytest.mark.slow] if heavy else []))
            out.append(pytest.param(case, mode, marks=p.marks, id=f"{case}-native={name}-export={mode}"))
    return out


_BUILT: dict = {}  # case -> what built() made, for this module's tests (the small cases weigh kilobytes)


@pytest.fixture(scope="module", autouse=True)
def _forget():
    yield
    _BUILT.clear()


class _Exports(dict):
    """{exporter: proto} of one module, each exported when first asked for (tests/onnx_exports.py)."""

    def __init__(self, module, size):
        super().__init__()
        self.module, self.size = module, size

    def __missing__(self, mode):
        self[mode] = X.export(self.module, (self.size, self.size), mode)
        return self[mode]


def built(case: str):
    """(variant, canonical weights, module, {exporter: exported proto}, size), made once per case."""
    if case not in _BUILT:
        name, change, size, _ = CASES[case]
        v = get(name).replace(**change)
        params = weights.random_params(v, 0)
        module = T.build(v)
        T.load_params(v, module, params)
        module.eval()
        _BUILT[case] = (v, params, module, _Exports(module, size), size)
    return _BUILT[case]


@pytest.mark.parametrize("case, mode", _cases_and_modes())
def test_the_export_agrees_with_the_module_at_every_tap(case, mode):
    """The module's own forward (PyTorch, taps recorded by equiv's module) vs its export (ONNX Runtime) by
    each exporter (id: export=...)."""
    v, params, module, protos, size = built(case)
    proto = protos[mode]
    reading = onnx_export.read(v, proto)
    assert reading.missing == {}, list(reading.missing.items())[:3]
    assert reading.remarks == []
    x = weights.random_input(v, 2, size, size, seed=1)
    mine = T.run(v, module, x)
    run, taps, _ = onnx_export.runner(v, proto, reading)
    assert taps == C.tap_names(v)
    theirs = run(x, taps)
    results = compare.compare_taps({"torch": mine, "export": theirs}, taps, compare.tap_tolerances(v))
    wrong = [(r.name, r.status, r.rel) for r in results if not r.ok]
    assert not wrong, wrong[:3]
    # the parameters the export holds as such are the module's, bit for bit; the rest are folded BatchNorms
    got = onnx_export.canonical_params(v, reading, "export")
    held = onnx_export.stored_names(v, reading)
    assert held and all(np.array_equal(got[n], params[n]) for n in held), [n for n in held if not
                                                                          np.array_equal(got[n], params[n])][:3]
    # the dynamo exporter's optimizer standardises a weight-standardised kernel ahead of time: said, not held
    assert bool(reading.standardised) == (mode == "dynamo-optimize" and getattr(v, "weight_std", False))
    if X.KEEPS_BN[mode]:
        assert reading.folded == []
    if not reading.folded and not reading.standardised:
        assert sorted(held) == sorted(params)
    else:
        layers = {n.split("/bn/")[0] if "/bn/" in n else n.rsplit("/", 1)[0] for n in set(params) - set(held)}
        said = set(reading.folded) | set(reading.standardised)
        assert layers <= said, sorted(layers - said)[:3]


def _agree(v, a: dict, b: dict) -> list:
    return compare.compare_taps({"a": a, "b": b}, C.tap_names(v), compare.tap_tolerances(v))


@pytest.mark.parametrize("case", [_params(c) for c in CASES])
def test_a_changed_kernel_in_the_export_is_caught_where_it_changes_the_network(case):
    """Half of one output channel of the middle Conv node's kernel raised in the exported graph (PRESERVE).
    Where it must be caught is computed independently: the module (PyTorch) with the same weights changed in
    its own parameters. The faulty export equals that faulty module at every tap, and against the unchanged
    module its first diverging tap is the first tap the change moves there, every tap before it equal."""
    from onnx import numpy_helper

    v, params, module, protos, size = built(case)
    proto = copy.deepcopy(protos["torchscript-preserve"])
    g = onnx_export.ExportGraph(proto)
    convs = [n for n in g.nodes if n.op_type == "Conv"]
    node = convs[len(convs) // 2]
    name = g.init_name(node.input[1])
    if name is None:  # a weight-standardised conv: its raw kernel feeds the standardising BatchNormalization
        name = g.init_name(g.producer[g.producer[node.input[1]].input[0]].input[0])
    init = g.inits[name]
    w = numpy_helper.to_array(init).copy()
    flat = w.reshape(-1)
    layer = next(k for k, a in params.items() if k.endswith("/kernel") and a.ndim == 4
                 and np.array_equal(C.hwio_to_oihw(a).reshape(-1), flat))  # the canonical kernel it holds
    # the first half of output channel 1's weights (over the first half of the input channels) raised by a
    # tenth of the channel's largest: neither a scale nor a shift of the whole channel, which weight
    # standardisation would divide out, and no single weight, which a dead input channel would hide
    oihw = C.hwio_to_oihw(params[layer]).copy()
    row = oihw.reshape(oihw.shape[0], -1)[1]
    row[: row.size // 2] += np.float32(0.1 * np.abs(row).max())
    init.CopyFrom(numpy_helper.from_array(oihw.reshape(w.shape), init.name))
    changed = dict(params)
    changed[layer] = np.ascontiguousarray(C.oihw_to_hwio(oihw))  # the same weights, HWIO
    faulty_module = copy.deepcopy(module)
    T.load_params(v, faulty_module, changed)
    x = weights.random_input(v, 1, size, size, seed=2)
    good, bad = T.run(v, module, x), T.run(v, faulty_module, x)
    expected = next(r.name for r in _agree(v, good, bad) if not r.ok)
    reading = onnx_export.read(v, proto)
    run, taps, _ = onnx_export.runner(v, proto, reading)
    exported = run(x, taps)
    assert all(r.ok for r in _agree(v, bad, exported))  # the plant is this fault and nothing else
    results = _agree(v, good, exported)
    first = next(r for r in results if not r.ok)
    assert first.name == expected and first.rel > 10 * first.tol, (first.name, expected, layer)
    assert all(r.ok for r in results[:C.tap_names(v).index(expected)])


def test_an_export_read_as_another_family_names_the_first_layer_it_cannot_place():
    """torchvision/resnet18's export read as torchvision/vgg16 or inception_v3: an EquivError naming the
    first layer and why (never a partial reading)."""
    module = T.build(get("torchvision/resnet18"))
    proto = X.export(module, (32, 32), "torchscript-eval")
    for name, first in (("torchvision/vgg16", "stage1/conv1"), ("torchvision/inception_v3", "stem/conv1")):
        v = get(name)
        with pytest.raises(EquivError, match=f"do not fit variant {name}: .*the exported graph has no counterpart "
                                             f"of {first} \\("):
            onnx_export.canonical_params(v, onnx_export.read(v, proto), "resnet18.onnx")


@pytest.mark.slow
def test_an_inception_export_read_with_its_auxiliary_head_says_the_head_is_missing():
    """The exporter drops Inception's auxiliary head (the module's output does not need it): read as the
    registered torchvision/inception_v3 (aux_logits=True), the tap and its parameters are named as missing,
    with the way out (slow: the Inception export; the default run covers the reader's refusal above)."""
    v, params, module, protos, size = built("inception_v3")
    registered = get("torchvision/inception_v3")
    reading = onnx_export.read(registered, protos["torchscript-eval"])
    assert list(reading.missing) == ["aux/logits"]
    with pytest.raises(EquivError, match=r"no counterpart of aux/logits \(the export holds no auxiliary head"):
        onnx_export.canonical_params(registered, reading, "inception.onnx")
