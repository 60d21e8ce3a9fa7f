"""Files and arguments from strangers: nothing runs that should not, a file that does not fit
says exactly why, NaN and Inf are named as such, reports are reproducible, and a job too big
for the machine is refused before it starts."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from equiv import canonical as C
from equiv import compare, files, memory
from equiv import variants as V
from equiv import weights as W
from equiv.checking import check
from equiv.cli import main
from equiv.errors import EquivError, NonFiniteError, ParamMismatchError, ResourceError, UnsafeFileError
from equiv.frameworks import FRAMEWORKS
from equiv.memory import check_input
from equiv.porting import load_weights, looks_like, run_file
from tests.fuzzing import TINY, tiny_params, write_keras2_h5

ROOT = Path(__file__).resolve().parents[1]
R18 = V.get("torchvision/resnet18")


@pytest.fixture(autouse=True)
def _restore_allocator_setting(monkeypatch):
    """`main` asks TensorFlow for the system allocator; keep that out of the rest of the session."""
    monkeypatch.delenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", raising=False)  # restored (or removed) afterwards


def cli(capsys, *args) -> tuple[int, str]:
    """`equiv ARGS` in this process: the exit status and what went to stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# 1. No code from files


def _mark(path: str) -> None:
    """What a hostile pickle would run; here it only leaves a file behind."""
    Path(path).write_text("ran")


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _mark, (self.marker,)


def _tiny_module(params):
    from equiv.frameworks import adapter

    ad = adapter("torch")
    model = ad.build(TINY)
    ad.load_params(TINY, model, params)
    return model


def test_a_pickle_that_runs_code_is_refused_and_runs_only_with_the_opt_in(tmp_path):
    import torch

    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pt"
    torch.save({"conv1.weight": _Payload(marker)}, path)
    with pytest.raises(UnsafeFileError) as e:
        files.read(path, TINY)
    message = str(e.value)
    assert str(path) in message and "tests.test_hostile._mark" in message
    assert "unpickling runs whatever code the file names" in message and "`allow_pickle=True`" in message
    assert "torch.save(torch.load(f, weights_only=False).state_dict(), 'weights.pt')" in message
    assert not marker.exists()
    # the opt-in does what it says: the pickle runs (then the file is not a state_dict)
    with pytest.warns(UserWarning, match="trusted to run code"), pytest.raises(EquivError, match="not a tensor"):
        files.read(path, TINY, allow_pickle=True)
    assert marker.read_text() == "ran"


def test_a_whole_pickled_module_loads_only_with_allow_pickle_and_says_so(tmp_path, capsys):
    import torch

    params = tiny_params(1)
    path = tmp_path / "whole.pt"
    torch.save(_tiny_module(params), path)
    with pytest.raises(UnsafeFileError, match="equiv.families.resnet.torch.ResNet"):
        load_weights(TINY, path)
    with pytest.warns(UserWarning, match=f"{path}: unpickled as asked"):
        got = load_weights(TINY, path, allow_pickle=True)
    assert f"equiv: warning: {path}: unpickled as asked (--allow-pickle, allow_pickle=True)" in capsys.readouterr().err
    assert all(np.array_equal(got[k], params[k]) for k in params)
    # a training checkpoint holding the module under "model" is unwrapped too
    torch.save({"model": _tiny_module(params), "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.warns(UserWarning):
        got = load_weights(TINY, tmp_path / "ckpt.pt", allow_pickle=True)
    assert all(np.array_equal(got[k], params[k]) for k in params)


def test_a_checkpoint_dict_with_a_state_dict_needs_no_pickle(tmp_path):
    import torch

    params = tiny_params(2)
    torch.save({"state_dict": _tiny_module(params).state_dict(), "epoch": 7}, tmp_path / "c.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is trusted, so nothing is said
        got = files.read(tmp_path / "c.pt", TINY)
    assert all(np.array_equal(got[k], params[k]) for k in params)


def test_a_model_pickled_by_a_script_loads_with_a_class_mapping(tmp_path):
    """As the seed's resnet.pkl: torch.save(model) in a script run as __main__, so the pickle
    names __main__.Net, which no other process can import."""
    path = tmp_path / "resnet.pkl"
    script = ("import sys, torch\n"
              "from equiv.families.resnet.torch import ResNet\n"
              "from tests.fuzzing import TINY, tiny_params\n"
              "from equiv.frameworks import adapter\n"
              "class Net(ResNet):\n    pass\n"
              "model = Net(TINY)\n"
              "adapter('torch').load_params(TINY, model, tiny_params(3))\n"
              "torch.save(model, sys.argv[1])\n")
    r = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert files.detect(path) == "torch"
    with pytest.warns(UserWarning), pytest.raises(EquivError, match="cannot be unpickled .*Net"):
        load_weights(TINY, path, allow_pickle=True)
    from equiv.families.resnet.torch import ResNet

    with pytest.warns(UserWarning):
        got = load_weights(TINY, path, allow_pickle=True, classes={"__main__.Net": ResNet})
    want = tiny_params(3)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_cli_refuses_a_pickle_with_exit_2_and_ports_it_with_allow_pickle(tmp_path, capsys):
    import torch

    from equiv.frameworks import adapter

    ad = adapter("torch")
    model = ad.build(R18)
    ad.load_params(R18, model, W.random_params(R18, 0))
    src = tmp_path / "whole.pt"
    torch.save(model, src)
    out = tmp_path / "out.safetensors"
    code, err = cli(capsys, "port", R18.name, "--from", src, "--to", out)
    assert code == 2 and str(src) in err and "--allow-pickle" in err and not out.exists()
    with warnings.catch_warnings(record=True) as caught:  # the command line says it once, as its own line
        warnings.simplefilter("always")
        code, err = cli(capsys, "port", R18.name, "--from", src, "--to", out, "--allow-pickle", "-q")
    assert code == 0 and caught == []
    assert err.splitlines() == [f"equiv: warning: {src}: unpickled as asked (--allow-pickle, allow_pickle=True): "
                                "this file is trusted to run code in this process"]
    got = files.read(out, R18)
    assert all(np.array_equal(got[k], a) for k, a in W.random_params(R18, 0).items())


def test_a_keras_archive_whose_config_holds_code_is_read_without_running_it(tmp_path):
    import keras

    from equiv.frameworks import adapter

    marker = tmp_path / "ran"
    hostile = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(
        lambda x, m=str(marker): (open(m, "w").close(), x)[1])])
    hostile.save(str(tmp_path / "lambda.keras"))
    marker.unlink()  # building the model above called the lambda once
    params = tiny_params(4)
    ad = adapter("keras")
    model = ad.build(TINY)
    ad.load_params(TINY, model, params)
    path = tmp_path / "tiny.keras"
    model.save(str(path))
    with zipfile.ZipFile(tmp_path / "lambda.keras") as z:
        config = z.read("config.json")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["config.json"] = config
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(ValueError, match="arbitrary code execution"):  # Keras' own safe loader refuses it
        keras.saving.load_model(str(path), safe_mode=True)
    got = files.read(path, TINY)
    assert all(np.array_equal(got[k], params[k]) for k in params)
    assert not marker.exists()


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            yield name, {k.arg: k.value for k in node.keywords}, node


def test_the_source_never_unpickles_or_deserialises_code_by_default():
    """Every call in equiv/: torch.load only with weights_only=True, except the one opt-in
    loader; no allow_pickle=True, no safe_mode=False, no pickle.load, no keras load_model."""
    unsafe = []
    for path in sorted((ROOT / "equiv").rglob("*.py")):
        tree = ast.parse(path.read_text())
        funcs = {id(n): f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
        for name, kw, node in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno} in {funcs.get(id(node))}"
            const = {k: v.value for k, v in kw.items() if isinstance(v, ast.Constant)}
            if name == "load" and "map_location" in kw and const.get("weights_only") is not True:
                unsafe.append(f"torch.load without weights_only=True at {where}")
            if const.get("allow_pickle") is True or const.get("safe_mode") is False:
                unsafe.append(f"unsafe flag at {where}")
            # onnx.load_model parses a protobuf (a graph of named ops and tensors: no code to run)
            protobuf = ast.unparse(node.func) == "onnx.load_model"
            if (name == "load_model" and not protobuf) or (name in ("load", "loads")
                                                           and "pickle" in ast.unparse(node.func)):
                unsafe.append(f"{name} at {where}")
    # the one place that unpickles for real is the opt-in loader (and the audit does see it)
    assert [u for u in unsafe if not u.endswith("in _trusted_load")] == []
    assert any(u.startswith("torch.load without weights_only=True at equiv/frameworks/torch.py") for u in unsafe)


# ---------------------------------------------------------------------------------------
# 4. A file that does not fit: the variant expected, the parameter, both shapes, the nearest variant


def _safetensors(path, params):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(a) for k, a in params.items()}, str(path))
    return path


@pytest.mark.parametrize("problem", ["depth", "classes", "missing-statistic", "transposed-kernel"])
def test_mismatches_exit_2_naming_variant_parameter_shapes_and_nearest_variant(problem, tmp_path, capsys):
    params = W.random_params(R18, 0)
    if problem == "depth":
        r34 = V.get("torchvision/resnet34")
        params = {k: np.zeros(s, np.float32) for k, s in C.param_shapes(r34).items()}
        expect = ["variant torchvision/resnet18", r"unexpected \(first: stage1/unit3/\S+ \([\d, ]+\)\)",
                  "the file looks like torchvision/resnet34"]
    elif problem == "classes":
        params["logits/kernel"], params["logits/bias"] = params["logits/kernel"][:, :10], params["logits/bias"][:10]
        expect = ["logits/kernel expected (512, 1000), found (512, 10)", "10-class head: pass --num-classes 10"]
    elif problem == "missing-statistic":
        del params["stage2/unit1/conv1/bn/moving_variance"]
        expect = ["1 missing (first: stage2/unit1/conv1/bn/moving_variance (128,))"]
    else:
        params["stage1/unit1/conv1/kernel"] = params["stage1/unit1/conv1/kernel"].transpose(3, 2, 0, 1).copy()
        expect = [("stage1/unit1/conv1/kernel expected (3, 3, 64, 64), found (64, 64, 3, 3): the same axes in "
                   "another order, a transposed kernel?")]
    src = _safetensors(tmp_path / "w.safetensors", params)
    code, err = cli(capsys, "port", R18.name, "--from", src, "--to", tmp_path / "out.pt", "-q")
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"equiv: error: {src}: parameters do not fit")
    for part in expect:
        assert re.search(part, err) if part.startswith("unexpected") else part in err, err
    if problem in ("missing-statistic", "transposed-kernel"):
        assert "looks like" not in err  # no registered variant fits either
    assert not (tmp_path / "out.pt").exists()


def test_a_torch_file_missing_a_statistic_is_named_in_canonical_terms(tmp_path):
    import torch

    from equiv.frameworks import adapter

    ad = adapter("torch")
    model = ad.build(R18)
    state = model.state_dict()
    del state["layer2.0.bn1.running_var"]
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ParamMismatchError) as e:
        load_weights(R18, tmp_path / "w.pt")
    assert e.value.missing == ["stage2/unit1/conv1/bn/moving_variance"] and "(128,)" in str(e.value)


def test_keras_files_of_another_variant_say_which_one_they_look_like(tmp_path):
    """By sorted shapes: Keras keeps the canonical layout, whatever its layer names."""
    params = W.random_params(R18, 0)
    weights_h5 = tmp_path / "r18.weights.h5"
    files.write(params, weights_h5, R18)
    legacy = tmp_path / "r18.h5"
    write_keras2_h5(legacy, params, R18)
    r34 = V.get("torchvision/resnet34")
    for path, fmt in ((weights_h5, "keras-weights"), (legacy, "keras2-h5")):
        assert looks_like(path, fmt, r34) == R18.name
        assert looks_like(path, fmt, R18.replace(name="x")) == R18.name
    # another head: the flag to pass
    ten = W.random_params(R18.replace(num_classes=10), 0)
    write_keras2_h5(tmp_path / "ten.h5", ten, R18.replace(num_classes=10))
    assert looks_like(tmp_path / "ten.h5", "keras2-h5", r34) == "torchvision/resnet18 with `num_classes=10`"
    with pytest.raises(ParamMismatchError, match="looks like torchvision/resnet18"):
        load_weights(r34, legacy)


# ---------------------------------------------------------------------------------------
# 5. NaN and Inf, half types, all-zero taps


def test_nan_in_weights_or_inputs_is_said_as_such(tmp_path, capsys):
    params = W.random_params(R18, 0)
    params["stage3/unit1/conv2/kernel"][1, 2, 3, 4] = np.inf
    src = _safetensors(tmp_path / "w.safetensors", params)
    x = W.random_input(R18, 1, 32, 32)
    np.save(tmp_path / "x.npy", x)
    code, err = cli(capsys, "run", R18.name, "--weights", src, "--framework", "torch", "--input", tmp_path / "x.npy",
                    "--output", tmp_path / "o.npz")
    assert code == 2 and "parameter stage3/unit1/conv2/kernel holds NaN or Inf (0 NaN, 1 Inf of" in err
    assert "first at (1, 2, 3, 4)" in err and "not equivalent" not in err.lower()
    x[0, 3, 4, 1] = np.nan
    with pytest.raises(NonFiniteError, match=r"the input holds NaN or Inf \(1 NaN, 0 Inf .* first at \(0, 3, 4, 1\)"):
        run_file(R18, tmp_path / "w.safetensors", "torch", x)
    with pytest.raises(NonFiniteError, match="parameter stage3/unit1/conv2/kernel"):
        from equiv.porting import build

        build(R18, "torch", weights=params)


def test_nonfinite_taps_are_reported_as_nonfinite_not_as_a_difference():
    v = TINY
    taps = C.tap_names(v)
    a = {t: np.ones((1, 3), np.float32) for t in taps}
    b = dict(a)
    b["stem/pool"] = np.array([[1.0, np.nan, np.inf]], np.float32)
    from equiv import report as R
    from equiv.compare import Report

    results = compare.compare_taps({"x": a, "y": b}, taps, compare.tap_tolerances(v))
    report = Report(kind="check", variant=v.name, frameworks=["x", "y"], settings={}, tolerance=1e-5, taps=results)
    bad = report.nonfinite[0]
    assert bad.name == "stem/pool" and bad.status == "nonfinite" and bad.nonfinite == (0, 2)
    assert report.status == "non-finite" and report.to_json()["status"] == "non-finite"
    summary = R.summary_lines(report)[0]
    assert summary.startswith("NON-FINITE: NaN or Inf first at tap stem/pool (x vs y: 0 and 2 values)")
    assert "NOT EQUIVALENT" not in R.to_text(report)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_taps_get_their_own_tolerance(dtype):
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")  # numpy's bfloat16 (it comes with TensorFlow and JAX)
    rng = np.random.default_rng(0)
    exact = rng.standard_normal((2, 8, 8, 16)).astype(np.float32)
    half = exact.astype(dtype)
    r = compare.compare_tap("t", exact, half, ("float32", dtype), None)
    assert r.dtype == dtype and r.tol == compare.tolerance(dtype)
    assert r.ok and r.rel > compare.tolerance("float32")  # rounding alone would fail a float32 tolerance
    assert not compare.compare_tap("t", exact, half, ("float32", dtype), compare.tolerance("float32")).ok
    wrong = half.copy()
    wrong[1, 2, 3, 4] += 0.05 * np.abs(exact).max()  # a real fault is still caught
    r = compare.compare_tap("t", exact, wrong, ("float32", dtype), None)
    assert not r.ok and r.worst_index == (1, 2, 3, 4)
    # by depth, through compare_taps: the half type's base grown as float32's is
    v = TINY
    outs = {t: np.ones((1, 4), np.float32) for t in C.tap_names(v)}
    halfs = {t: a.astype(dtype) for t, a in outs.items()}
    results = compare.compare_taps({"a": outs, "b": halfs}, C.tap_names(v), depths=C.tap_depths(v))
    want = compare.tap_tolerances(v, dtype)
    assert all(r.tol == want[r.name] for r in results)


def test_an_all_zero_tap_divides_by_nothing():
    z = np.zeros((2, 4, 4, 3), np.float32)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        same = compare.compare_tap("t", z, z.copy(), ("a", "b"), 1e-5)
        other = compare.compare_tap("t", z, z + np.float32(1e-7), ("a", "b"), 1e-5)
        empty = compare.compare_tap("t", z[:0], z[:0], ("a", "b"), 1e-5)
    assert same.ok and same.rel == 0 and same.cosine == 1.0
    assert not other.ok and math.isinf(other.rel) and other.to_json()["rel"] == "inf" and other.cosine == 0.0
    assert empty.ok


# ---------------------------------------------------------------------------------------
# 6. The same command and seed: the same JSON bytes


_CHECK_JSON = ("from equiv import report\nfrom equiv.checking import check\nfrom tests.fuzzing import TINY\n"
               "print(report.to_json_text(check(TINY, ('torch', 'keras'), input_size=(19, 18), batch=2, seed=5,"
               " isolated=True)), end='')\n")


def test_json_reports_are_byte_identical_across_runs_and_processes():
    r = subprocess.run([sys.executable, "-c", _CHECK_JSON], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    from equiv import report as R

    here = [R.to_json_text(check(TINY, ("torch", "keras"), input_size=(19, 18), batch=2, seed=5, isolated=True))
            for _ in range(2)]
    assert r.stdout == here[0] == here[1]
    assert json.loads(here[0])["taps"] and "timings_s" not in here[0] and "peak_memory_mb" not in here[0]


@pytest.mark.slow
def test_the_cli_json_report_is_byte_identical_across_processes(tmp_path):
    args = ["check", R18.name, "--input-size", "33", "32", "--batch", "1", "--seed", "5", "-q"]
    for name, seed in (("a", "1"), ("b", "2")):
        r = subprocess.run([sys.executable, "-m", "equiv.cli", *args, "--json", str(tmp_path / f"{name}.json")],
                           cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PYTHONHASHSEED=seed))
        assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_port_json_is_byte_identical_for_the_same_command(tmp_path, capsys):
    src = files.write(W.random_params(TINY, 0), tmp_path / "w.safetensors", TINY)[0]
    from equiv.porting import port

    texts = []
    for _ in range(2):
        result = port(TINY, src, tmp_path / "o.pt", verify=True, force=True, input_size=(16, 16), batch=2)
        texts.append(json.dumps(result.to_json(), indent=2))
    assert texts[0] == texts[1] and "timings_s" not in texts[0] and "peak_memory_mb" not in texts[0]


# ---------------------------------------------------------------------------------------
# 7. Too big for the machine: refused before any work, with the memory it would need


_TINY_V2 = TINY.replace(name="fuzz/tiny-v2", block="bottleneck", preact=True, stride_conv=2, conv_padding="tf_same",
                        pool_kernel=3, pool_stride=2, pool_padding="tf_same", depths=(1, 2), widths=(2, 3),
                        strides=(1, 2))


@pytest.mark.parametrize("v", [TINY, _TINY_V2], ids=lambda v: v.name)
def test_tap_sizes_from_the_plan_match_what_the_frameworks_produce(v):
    report = check(v, ("torch", "slim"), input_size=(35, 34), batch=1)
    produced = {r.name: math.prod(r.shape) for r in report.taps}
    assert memory.tap_elements(v, 35, 34) == produced


def test_a_job_bigger_than_the_memory_available_is_refused(monkeypatch):
    v = V.get("keras/ResNet152")
    need = memory.estimate(v, 2, 224, 224, list(FRAMEWORKS))  # what a check runs by default
    monkeypatch.setattr(memory, "available", lambda: need["total"] - 1)
    with pytest.raises(ResourceError, match=rf"needs about {memory.human(need['total'])} of memory .*available"):
        check(v, input_size=(224, 224), batch=2)
    monkeypatch.setattr(memory, "available", lambda: need["total"])
    check_input(v, 2, 224, 224, frameworks=["keras", "slim", "torch"])  # fits: no error
    assert memory.estimate(v, 4, 224, 224, ["torch"])["total"] > need["total"] / 2  # grows with the batch


@pytest.mark.parametrize("size", [["--batch", "1000000"], ["--batch", "64", "--input-size", "4000", "4000"]],
                         ids=["batch", "input-size"])
def test_huge_batch_or_input_is_refused_up_front_with_the_memory_needed(size):
    code = ("import sys\nfrom equiv.cli import main\n"
            f"code = main(['check', 'keras/ResNet152', *{size!r}])\n"
            "assert code == 2, code\n"
            "late = [m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules]\n"
            "assert not late, late  # refused before any framework was imported\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "needs about" in r.stderr and " TB of memory (" in r.stderr and "lower --batch or --input-size" in r.stderr


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 16's torchvision/resnext101_32x8d (88.8 M parameters) is now the "
                   "largest ResNet: 3.05 GB peak RSS measured (equiv's own figure 2978 MB), over the 3 GB bound; "
                   "the check holds three frameworks' weights and taps at once. Open: lower the check's peak "
                   "(release each framework's model before the next builds), then drop this mark")
def test_the_largest_check_stays_under_3_gb(tmp_path):
    """`equiv check` of the largest registered variant at the defaults (224x224, batch 2)."""
    largest = max((v for v in V.all_variants() if v.family == "resnet"), key=C.param_count)  # VGG: test_vgg.py
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "equiv.cli", "check", largest.name, "-q"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this process's own peak, from the kernel
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, (tmp_path / "err").read_text()[-2000:]
    peak = usage.ru_maxrss * 1024
    assert peak < 3e9, f"{largest.name}: peak {peak / 1e9:.2f} GB"
    assert memory.estimate(largest, 2, 224, 224, FRAMEWORKS)["total"] >= peak
