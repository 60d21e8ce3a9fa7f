"""The onnx backend beyond the contract: the graph it writes (explicit pads, a checked `.onnx` file
that plain ONNX Runtime runs), a user's ModelProto, and the ONNX Runtime optimisation it turns off."""

from __future__ import annotations

import numpy as np
import pytest

from equiv import canonical as C
from equiv import compare, files, weights
from equiv import variants as V
from equiv.errors import FrameworkError
from equiv.frameworks import adapter, loaded
from tests.fuzzing import TINY, tiny_params

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
O = adapter("onnx")


def _pads(v, size):
    with loaded("onnx", v) as m:
        proto = m.proto(size, size)
    values = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
              for n in proto.graph.node if n.op_type == "Constant"}
    return [(n.output[0].split("/pad#")[0], float(values[n.input[2]])) for n in proto.graph.node if n.op_type == "Pad"]


def test_pads_are_explicit_where_the_layers_padding_cannot_say_them():
    # slim: its stem max-pool is TF SAME, -inf, (0, 1) on even sizes; TF SAME convs with a stride pad zeros
    assert _pads(V.get("slim/resnet_v1_50").replace(depths=(1, 1, 1, 1), reference=None), 64) == [
        ("stem/pool", float("-inf"))]
    same = V.get("torchvision/resnet18").replace(depths=(1, 1, 1, 1), conv_padding="tf_same", reference=None)
    assert _pads(same, 64) == [("stem/pool", float("-inf"))] + [(f"stage{s}/unit1/conv1", 0.0) for s in (2, 3, 4)]
    # keras.applications: zeros around the max-pool (a border of zeros after it), convs through Conv's pads
    with loaded("onnx", V.get("keras/ResNet50").replace(depths=(1, 1, 1, 1), reference=None)) as m:
        ops = [n.op_type for n in m.proto(64, 64).graph.node]
    assert "Pad" not in ops and ops[ops.index("MaxPool") + 2] == "Max"


def test_a_written_onnx_file_is_checked_run_by_plain_onnxruntime_and_read_back(tmp_path):
    params = tiny_params()
    (path,) = files.write(params, tmp_path / "tiny.onnx", TINY)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.initializer] == list(C.param_shapes(TINY))
    assert [o.name for o in proto.graph.output] == C.tap_names(TINY)
    x = weights.random_input(TINY, 2, 224, 224)
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # ORT's defaults
    got = dict(zip(C.tap_names(TINY), plain.run(None, {"x": x})))
    with loaded("onnx", TINY, params) as m:
        direct = O.run(TINY, m, x)
    results = compare.compare_taps({"plain": got, "equiv": direct}, C.tap_names(TINY), compare.tap_tolerances(TINY))
    assert compare.first_divergence(results) is None  # ORT's optimisations round differently, within float32
    back = files.read(path, TINY)
    assert all(np.array_equal(back[k], a) for k, a in params.items())
    # a user's ModelProto: adopted, read and run at the size it was written for
    from equiv.frameworks import backend_of

    assert backend_of(proto) == "onnx"
    run, taps, size = O.model_runner(TINY, proto)
    assert taps == C.tap_names(TINY) and size == (224, 224)
    assert np.array_equal(run(x, ["logits"])["logits"], got["logits"])


def test_a_graph_not_from_equiv_is_named():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "other",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [onnx.numpy_helper.from_array(np.zeros(3, np.float32), "conv1.weight")])
    with pytest.raises(Exception, match="missing|unexpected"):
        O.model_params(TINY, helper.make_model(g))
    with pytest.raises(Exception, match="no output named as a tap"):
        O.model_runner(TINY, helper.make_model(g))


def test_there_is_no_reference_library_to_insist_on():
    with pytest.raises(FrameworkError, match="no onnx reference implementation"):
        O.build(V.get("torchvision/resnet18"), reference=True)


def test_zeros_before_a_max_pool_stay_zeros():
    """ONNX Runtime 1.30's Pad_Fusion moves a Pad of zeros into the MaxPool's own (-inf) padding;
    equiv's sessions turn it off, on every optimisation level."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Pad", ["x", "pads", "zero"], ["p"], mode="constant"),
             helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[3, 3], strides=[2, 2])]
    inits = [onnx.numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             onnx.numpy_helper.from_array(np.array(0, np.float32), "zero")]
    g = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])], inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    x = -np.ones((1, 1, 4, 4), np.float32)
    for level in ("disable", "basic", "extended", "all"):
        assert O.session(proto, optimization=level).run(None, {"x": x})[0].ravel().tolist() == [0, 0, 0, -1], level


def test_a_written_zero_padded_pool_is_right_under_plain_onnxruntime():
    """keras.applications' stem written to a graph: ORT's own defaults (Pad_Fusion on) give zeros at the
    border where the numpy reference does (the stem has no ReLU before the pool in v2)."""
    from equiv import reference

    v = V.get("keras/ResNet50V2").replace(depths=(1, 1, 1, 1), reference=None)
    params, x = weights.random_params(v, 0), weights.random_input(v, 1, 40, 40)
    with loaded("onnx", v, params) as m:
        proto = m.proto(40, 40, ["stem/pool"])
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = reference.forward(v, params, x)["stem/pool"]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_the_float16_graph_of_the_cuda_path_is_valid_and_close_to_the_float32_one():
    """The bench's fp16 path (CUDA only there) writes a checker-valid graph; ONNX Runtime's CPU runs it
    too, within the float16 tolerance of the float32 graph at the logits."""
    v = V.get("torchvision/resnet18")
    params, x = weights.random_params(v, 0), weights.random_input(v, 2, 32, 32)
    with loaded("onnx", v, params) as m:
        half = O.float16(m.proto(32, 32, ["logits"]))
        want = O.run(v, m, x, ["logits"])["logits"]
    onnx.checker.check_model(half, full_check=True)
    assert {i.data_type for i in half.graph.initializer} == {onnx.TensorProto.FLOAT16}
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    tol = compare.tap_tolerances(v, "float16")["logits"]
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert 0 < rel <= tol  # float16 rounds (not the float32 graph run again), within its tolerance


def test_each_bench_path_gives_the_plain_paths_logits_or_says_why_it_cannot_run_here():
    """What `equiv bench --frameworks onnx --best` times (its ceilings aside: tests/test_bench.py, slow):
    every optimisation level and thread setting gives the plain path's logits within the float32
    tolerance; the CUDA paths (TF32, float16) are refused on the CPU with the reason."""
    v = V.get("torchvision/resnet18")
    x = weights.random_input(v, 2, 32, 32)
    tol = compare.tap_tolerances(v)["logits"]
    with loaded("onnx", v, weights.random_params(v, 0)) as m:
        plain = O.forward_fn(v, m, x)()
        for name, opts in O.FAST_PATHS.items():
            try:
                out = O.forward_fn(v, m, x, **opts)()
            except FrameworkError as e:
                assert ("CUDA path" in str(e)) == (name in ("tf32", "fp16")), (name, e)
                assert name in ("tf32", "fp16") or "physical core" in str(e), (name, e)
                continue
            assert np.abs(out - plain).max() <= tol * np.abs(plain).max(), name
