"""Porting real weight files: written by each framework's own saving API, ported by equiv,
loaded back by each framework's own loading API, and compared."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

import equiv.frameworks._slim_compat  # noqa: F401  (tf_slim on TF 2.21, before tf_slim is imported)
from equiv import canonical as C
from equiv import compare, files, reference, weights
from equiv import variants as V
from equiv.errors import EquivError
from equiv.frameworks import adapter
from equiv.porting import detect, port

FORMATS = ("tf-checkpoint", "keras-weights", "torch", "safetensors")
NATIVE_FORMAT = {"slim": "tf-checkpoint", "keras": "keras-weights", "torch": "torch"}
SUFFIX = {"tf-checkpoint": ".ckpt", "keras-weights": ".weights.h5", "torch": ".pt", "safetensors": ".safetensors"}
VARIANTS = ["slim/resnet_v1_50", "keras/ResNet50V2", "torchvision/resnet18"]


def native_file(v, folder, seed=0):
    """A file of `v` in its native format, written by that framework's own saving API."""
    params = weights.random_params(v, seed)
    ad = adapter(v.native)
    model = ad.build(v)  # the real reference: tf_slim.nets, keras.applications, torchvision layout
    ad.load_params(v, model, params)
    path = folder / f"native{SUFFIX[NATIVE_FORMAT[v.native]]}"
    if v.native == "slim":
        import tensorflow as tf

        with model.graph.as_default():
            tf.compat.v1.train.Saver().save(model.session, str(path), write_meta_graph=False)
        model.close()
    elif v.native == "keras":
        model.save_weights(str(path))
    else:
        import torch

        torch.save(model.state_dict(), path)
    return path, params


def plain_logits(v, path, fmt, x):
    """Logits of a weight file, loaded with the framework's own plain API (no equiv loading)."""
    if fmt == "tf-checkpoint" and v.native == "slim":
        import tensorflow as tf
        import tf_slim as slim
        from tf_slim.nets import resnet_v1, resnet_v2

        mod = resnet_v1 if "v1" in v.name else resnet_v2
        g = tf.Graph()
        with g.as_default():
            inp = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
            with slim.arg_scope(mod.resnet_arg_scope()):
                logits, _ = getattr(mod, v.short_name)(inp, num_classes=v.num_classes, is_training=False)
            sess = tf.compat.v1.Session(graph=g)
            tf.compat.v1.train.Saver().restore(sess, str(path))
            out = sess.run(logits, {inp: x})
        sess.close()
        return out.reshape(x.shape[0], -1)
    if fmt == "tf-checkpoint":  # no tf_slim.nets function for this variant: the plain reader
        import tensorflow as tf

        reader = tf.train.load_checkpoint(str(path))
        names = adapter("slim").framework_names(v)
        got = {c: reader.get_tensor(s) for c, s in names.items()}
        got["logits/kernel"] = got["logits/kernel"].reshape(C.param_shapes(v)["logits/kernel"])
        return reference.forward(v, got, x, dtype=np.float32)["logits"]
    if fmt == "keras-weights":
        import keras

        if v.native == "keras":
            model = getattr(keras.applications, v.short_name)(
                weights=None, input_shape=x.shape[1:], classes=v.num_classes, classifier_activation=None)
        else:  # no keras.applications model for this variant: equiv's Keras build, Keras' own load
            model = adapter("keras").build(v)
        model.load_weights(str(path))
        return np.asarray(model(x, training=False))
    if fmt == "torch":
        import torch

        from tests.torchvision_layout import torchvision_model

        model = torchvision_model(v) if v.native == "torch" else adapter("torch").build(v)
        model.load_state_dict(torch.load(path, weights_only=True), strict=True)
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2)))
        return out.numpy()
    from safetensors.numpy import load_file  # canonical names: the numpy reference runs it

    return reference.forward(v, load_file(str(path)), x, dtype=np.float32)["logits"]


def assert_logits_close(a, b, v):
    tol = compare.tap_tolerances(v)["logits"]
    assert np.abs(a - b).max() <= tol * np.abs(a).max(), np.abs(a - b).max() / np.abs(a).max()


@pytest.fixture(scope="module", params=VARIANTS)
def source(request, tmp_path_factory):
    v = V.get(request.param)
    folder = tmp_path_factory.mktemp(v.short_name)
    path, params = native_file(v, folder)
    x = weights.random_input(v, 1, 32, 32, seed=3)
    return v, path, params, x, plain_logits(v, path, NATIVE_FORMAT[v.native], x)


# every format but the source's own (a file ported to its own format is test_every_pair_of_formats_for_resnet18's)
@pytest.mark.parametrize("source, fmt", [(n, f) for n in VARIANTS for f in FORMATS
                                         if f != NATIVE_FORMAT[V.get(n).native]], indirect=["source"])
def test_native_file_ports_to_every_format(source, fmt, tmp_path):
    v, path, params, x, logits = source
    target = tmp_path / f"out{SUFFIX[fmt]}"
    result = port(v, path, target, verify=True, input_size=(32, 32), batch=1)
    assert result.report.equivalent, result.report.first
    assert result.source_format == NATIVE_FORMAT[v.native] and result.target_format == fmt
    # the target framework's own plain API loads it and computes the same logits
    assert_logits_close(logits, plain_logits(v, target, fmt, x), v)
    # file -> file -> file: back to the native format, bit-exact
    back = tmp_path / f"back{SUFFIX[NATIVE_FORMAT[v.native]]}"
    port(v, target, back)
    a, b = files.read(path, v), files.read(back, v)
    assert all(np.array_equal(a[k], b[k]) for k in a) and all(np.array_equal(params[k], a[k]) for k in a)


@pytest.mark.parametrize("src,dst", [p for p in itertools.permutations(FORMATS, 2)])
def test_every_pair_of_formats_for_resnet18(src, dst, tmp_path):
    v = V.get("torchvision/resnet18")
    params = weights.random_params(v, 7)
    first = tmp_path / f"a{SUFFIX[src]}"
    files.write(params, first, v)
    second = tmp_path / f"b{SUFFIX[dst]}"
    port(v, first, second)
    third = tmp_path / f"c{SUFFIX[src]}"
    port(v, second, third)
    got = files.read(third, v)
    assert all(np.array_equal(got[k], params[k]) for k in params)
    x = weights.random_input(v, 1, 32, 32)
    assert_logits_close(plain_logits(v, first, src, x), plain_logits(v, second, dst, x), v)


def test_slim_to_safetensors_touches_no_framework(tmp_path):
    """The checkpoint is read by equiv.tf_reader (with google-crc32c installed, as the venv has it):
    not even TensorFlow is imported."""
    v = V.get("slim/resnet_v2_50")
    params = weights.random_params(v, 0)
    files.write(params, tmp_path / "w.ckpt", v)
    code = (
        "import sys, equiv\n"
        f"equiv.port('slim/resnet_v2_50', {str(tmp_path / 'w.ckpt')!r}, {str(tmp_path / 'w.safetensors')!r})\n"
        "bad = [m for m in ('tensorflow', 'keras', 'torch', 'equiv.frameworks.keras', 'equiv.frameworks.torch')\n"
        "       if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert files.read(tmp_path / "w.safetensors", v).keys() == params.keys()


def test_drop_background_turns_1001_classes_into_1000(tmp_path):
    v = V.get("slim/resnet_v2_50")
    params = weights.random_params(v, 0)
    files.write(params, tmp_path / "w.ckpt", v)
    with pytest.raises(EquivError, match="1001-class head: pass `num_classes=1001` `drop_background_class=True`"):
        port(v, tmp_path / "w.ckpt", tmp_path / "y.pt", num_classes=1000)
    assert not (tmp_path / "y.pt").exists()
    result = port(v, tmp_path / "w.ckpt", tmp_path / "w.pt", drop_background_class=True, verify=True,
                  input_size=(32, 32), batch=1)
    assert result.report.equivalent
    got = files.read(tmp_path / "w.pt", v.replace(num_classes=1000))
    assert np.array_equal(got["logits/kernel"], params["logits/kernel"][:, 1:])


def cli(*args):
    return subprocess.run([sys.executable, "-m", "equiv.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_port_verify_and_run(tmp_path):
    v = V.get("torchvision/resnet18")
    src, _ = native_file(v, tmp_path)
    out = tmp_path / "r18.weights.h5"
    r = cli("port", v.name, "--from", str(src), "--to", str(out), "--verify", "--input-size", "32", "32",
            "--batch", "1", "--json", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    assert "EQUIVALENT" in r.stdout and json.loads((tmp_path / "p.json").read_text())["verify"]["equivalent"]
    x = weights.random_input(v, 2, 40, 36)
    np.save(tmp_path / "in.npy", x)
    r = cli("run", v.name, "--weights", str(out), "--framework", "keras", "--input", str(tmp_path / "in.npy"),
            "--output", str(tmp_path / "o.npz"), "--taps", "all")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "o.npz", allow_pickle=False) as z:
        assert set(z.files) == set(C.tap_names(v))
        assert_logits_close(plain_logits(v, src, "torch", x), z["logits"], v)


def test_existing_output_is_not_replaced_without_force(tmp_path):
    v = V.get("torchvision/resnet18")
    src, _ = native_file(v, tmp_path)
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"precious")
    r = cli("port", v.name, "--from", str(src), "--to", str(out))
    assert r.returncode == 2 and "exists; pass --force" in r.stderr
    assert out.read_bytes() == b"precious"
    assert cli("port", v.name, "--from", str(src), "--to", str(out), "--force").returncode == 0
    assert files.read(out, v).keys() == set(C.param_shapes(v))


def test_a_port_leaves_the_garbage_collector_as_it_found_it(tmp_path):
    """port pauses the cyclic collector while it reads and writes (equiv.porting._collector_paused):
    on, it is on again after a port that succeeds and after one that fails; off, it stays off."""
    import gc

    v = V.get("torchvision/resnet18")
    src = tmp_path / "w.safetensors"
    files.write(weights.random_params(v, 0), src, v)
    assert gc.isenabled()
    port(v, src, tmp_path / "w.pt")
    assert gc.isenabled()
    with pytest.raises(EquivError):
        port(v, tmp_path / "missing.safetensors", tmp_path / "x.pt")
    assert gc.isenabled()
    gc.disable()
    try:
        port(v, src, tmp_path / "w2.pt")
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("fmt", ["torch", "tf-checkpoint", "keras-weights"])
def test_damaged_framework_files_exit_2_naming_the_file(fmt, tmp_path):
    v = V.get("torchvision/resnet18")
    src = tmp_path / f"w{SUFFIX[fmt]}"
    files.write(weights.random_params(v, 0), src, v)
    damaged = (tmp_path / "w.ckpt.data-00000-of-00001") if fmt == "tf-checkpoint" else src
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 3])
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("port", v.name, "--from", str(src), "--to", str(tmp_path / "out.safetensors"))
    assert r.returncode == 2, r.stderr[-2000:]
    assert str(src) in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("damage", ["truncate", "wrong-variant", "nan", "garbage"])
def test_bad_files_exit_2_and_write_nothing(damage, tmp_path):
    v = V.get("torchvision/resnet18")
    params = weights.random_params(v, 0)
    src = tmp_path / "w.safetensors"
    if damage == "wrong-variant":
        other = V.get("torchvision/resnet34")
        files.write(weights.random_params(other, 0), src, other)
    elif damage == "nan":
        bad = dict(params)
        bad["stage2/unit1/conv1/kernel"] = bad["stage2/unit1/conv1/kernel"].copy()
        bad["stage2/unit1/conv1/kernel"][0, 0, 0, 0] = np.nan
        from safetensors.numpy import save_file

        save_file(bad, str(src))
    else:
        files.write(params, src, v)
        data = src.read_bytes()
        src.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x08" + data[1:100])
    out = tmp_path / "out.pt"
    r = cli("port", v.name, "--from", str(src), "--to", str(out))
    assert r.returncode == 2, r.stderr
    assert str(src) in r.stderr and "Traceback" not in r.stderr
    if damage == "wrong-variant":
        assert "unexpected (first: stage1/unit3/" in r.stderr
        assert "the file looks like torchvision/resnet34" in r.stderr
    if damage == "nan":
        assert "stage2/unit1/conv1/kernel holds NaN" in r.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_headless_port_leaves_the_head_out(tmp_path):
    """port(headless=True): a whole network's file -> its backbone's, in keras-hub's names (written and
    read back with h5py: equiv.keras_h5), the body bit for bit and no head; the slow CLI test below
    loads it with keras-hub's own ResNetBackbone."""
    v = V.get("torchvision/resnet50")
    params = weights.random_params(v, 0)
    src = tmp_path / "full.safetensors"
    files.write(params, src, v)
    dst = tmp_path / "backbone.weights.h5"
    port(v.name, src, dst, target_dialect="keras-hub", headless=True)
    got = files.read(dst, v.replace(head="none", num_classes=0).in_dialect("keras-hub"))
    assert sorted(got) == sorted(n for n in params if not n.startswith("logits/"))
    assert all(got[n].tobytes() == params[n].tobytes() for n in got)
    with pytest.raises(EquivError, match="headless"):
        port(v.name, src, tmp_path / "y.weights.h5", target_dialect="keras-hub", headless=True, verify=True)
    assert not (tmp_path / "y.weights.h5").exists()
    found = detect(dst)  # told by its content: a backbone's file, in keras-hub's names
    assert "keras-hub" in found["dialects"]
    assert "torchvision/resnet50 with `source_headless=True`" in found["loads_as"]


@pytest.mark.slow
def test_cli_headless_port_writes_the_backbone_file_keras_hub_loads(tmp_path):
    """`equiv port --to-dialect keras-hub --headless`: Hugging Face's whole model.safetensors -> the
    backbone alone, which keras-hub's own `ResNetBackbone.load_weights` (Keras' plain loader, keras-hub
    0.32's model) takes, every variable bit for bit the source's; `--from-headless` reads it back. The
    layout is written with h5py (equiv.keras_h5); keras-hub's own model is the other side."""
    keras_hub = pytest.importorskip("keras_hub")
    v = V.get("torchvision/resnet50")  # the smallest network keras-hub's dialect names
    params = weights.random_params(v, 0)
    (tmp_path / "hf").mkdir()
    src = tmp_path / "hf" / "model.safetensors"
    files.write(params, src, v.in_dialect("hf"))
    dst = tmp_path / "backbone.weights.h5"
    r = cli("port", v.name, "--from", str(src), "--from-dialect", "hf", "--to", str(dst), "--to-dialect",
            "keras-hub", "--headless")
    assert r.returncode == 0, r.stderr[-2000:]
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3], stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    backbone.load_weights(str(dst))
    headless = v.replace(head="none", num_classes=0).in_dialect("keras-hub")
    got = adapter("keras").export_params(headless, backbone)
    assert sorted(got) == sorted(n for n in params if not n.startswith("logits/"))
    assert all(got[n].tobytes() == params[n].tobytes() for n in got)
    back = tmp_path / "back.safetensors"
    r = cli("port", v.name, "--from", str(dst), "--from-dialect", "keras-hub", "--from-headless", "--to", str(back))
    assert r.returncode == 0, r.stderr[-2000:]
    assert files.read(back, headless).keys() == got.keys()
    r = cli("port", v.name, "--from", str(dst), "--from-dialect", "keras-hub", "--to", str(tmp_path / "x.pt"))
    assert r.returncode == 2 and str(dst) in r.stderr and not (tmp_path / "x.pt").exists()
    assert "looks like keras_hub/resnet_50 with --from-headless" in r.stderr  # a backbone's file, told so
