"""The input conventions: each record against its library's own code, the registry's choices, and
`check --raw-images` catching an RGB/BGR swap at the input tap (real frameworks, no mocks)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from equiv import files, weights
from equiv import preprocessing as P
from equiv import variants as V
from equiv.checking import check
from equiv.errors import EquivError


def _every_value() -> np.ndarray:
    """A uint8 RGB batch holding every value 0-255 in every channel, channels differing per pixel."""
    levels = np.arange(256, dtype=np.uint8)
    img = np.stack([levels, np.roll(levels, 85), np.roll(levels, 170)], axis=-1)  # (256, 3)
    return img.reshape(1, 16, 16, 3)


RAW = _every_value()


def test_every_registered_variant_states_the_input_its_reference_library_expects():
    expected = {"slim/resnet_v1": "slim-vgg", "slim/resnet_v2": "slim-inception", "keras/ResNet": "keras-caffe",
                "torchvision/": "torchvision", "seed/": "none", "slim/vgg": "slim-vgg", "keras/VGG": "keras-caffe",
                "timm/resnet50d": "torchvision",  # timm's pretrained_cfg: the same numbers (tests/test_torchvision.py)
                # timm's resnetv2 configs: IMAGENET_INCEPTION_MEAN/STD (0.5), slim's Inception scaling to [-1, 1]
                "timm/resnetv2": "slim-inception",
                # microsoft/resnet-50's preprocessor_config and keras-hub's ResNet image converter: ImageNet's
                # mean and std on [0, 1], as torchvision
                "hf/": "torchvision", "keras_hub/": "torchvision",
                # tf_slim.nets' inception_v3 and keras.applications.inception_v3.preprocess_input ("tf" mode): [-1, 1]
                "slim/inception": "slim-inception", "keras/Inception": "keras-tf"}
    for v in V.all_variants():
        prefix = next(p for p in expected if v.name.startswith(p))
        want = "keras-tf" if v.name.startswith("keras/") and v.name.endswith("V2") else expected[prefix]
        assert v.preprocessing == want, v.name
        assert P.of_variant(v).name == want


def test_each_backend_names_its_librarys_conventions():
    """The ResNet family's builder for each backend says what its library feeds a plain and a
    pre-activation ResNet; a side of a check that is not the variant's native framework is fed that."""
    from equiv import families
    from equiv.frameworks import REGISTRY

    v1, v2 = V.get("torchvision/resnet50"), V.get("keras/ResNet50V2")
    habits = {"slim": ("slim-vgg", "slim-inception"), "keras": ("keras-caffe", "keras-tf"),
              "torch": ("torchvision", "torchvision")}
    assert {n: (families.builder(v1, n).preprocessing(v1), families.builder(v2, n).preprocessing(v2))
            for n in habits} == habits
    assert [P.of_framework(f, v1).name for f in habits] == ["slim-vgg", "keras-caffe", "torchvision"]
    assert [P.of_framework(f, v2).name for f in habits] == ["slim-inception", "keras-tf", "torchvision"]
    # A backend without a library of its own (onnx: equiv's graph from the description) has no habit:
    # it is fed what the variant's weights expect.
    for n in set(REGISTRY) - set(habits):
        assert not hasattr(families.builder(v1, n), "preprocessing")
        assert (P.of_framework(n, v1).name, P.of_framework(n, v2).name) == ("torchvision", "keras-tf")
    seed = V.get("seed/torch_resnet_v2")  # its native side is fed what the seed feeds: nothing
    assert P.of_framework("torch", seed).name == "none" and P.of_framework("keras", seed).name == "keras-caffe"


@pytest.mark.parametrize("name,module", [("keras-caffe", "resnet"), ("keras-tf", "resnet_v2")])
def test_keras_records_are_bit_exact_with_keras_applications_preprocess_input(name, module):
    import importlib

    keras_module = importlib.import_module(f"keras.applications.{module}")
    theirs = keras_module.preprocess_input(RAW.copy(), data_format="channels_last")  # on uint8, as users call it
    mine = P.get(name).apply(RAW)
    assert theirs.dtype == mine.dtype == np.float32
    np.testing.assert_array_equal(mine, theirs)
    fn, by = P.library_function(P.get(name))  # what check --raw-images calls
    assert by == f"keras.applications.{module}.preprocess_input"
    np.testing.assert_array_equal(fn(RAW), theirs)


def test_keras_caffe_is_bgr_with_the_imagenet_mean_and_keras_tf_is_minus_one_to_one():
    """The numbers the records claim, on known pixels (keras' own function computes them)."""
    from keras.applications import resnet, resnet_v2

    px = np.array([[[[255, 0, 10]]]], dtype=np.uint8)  # R=255, G=0, B=10
    np.testing.assert_allclose(resnet.preprocess_input(px.copy())[0, 0, 0],
                               [10 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-6)
    np.testing.assert_allclose(resnet_v2.preprocess_input(px.copy())[0, 0, 0], [1.0, -1.0, 10 / 127.5 - 1], rtol=1e-6)


def test_torchvision_record_is_torchs_totensor_then_normalize_with_the_documented_constants():
    """torchvision's ImageNet transforms (https://pytorch.org/vision/stable/models/generated/
    torchvision.models.resnet50.html): ToTensor (a ByteTensor .to(float32).div(255)), then Normalize,
    whose forward is tensor.sub_(mean).div_(std); computed here with torch's own ops."""
    import torch

    t = torch.from_numpy(RAW.copy()).permute(0, 3, 1, 2).to(torch.float32).div(255)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    theirs = t.sub_(mean).div_(std).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(P.get("torchvision").apply(RAW), theirs)


def test_torchvision_record_against_real_torchvision_normalize():
    try:
        from torchvision import transforms
    except Exception as e:  # noqa: BLE001 - torchvision 0.28 does not import under torch 2.13 (the default env)
        pytest.skip(f"torchvision does not import here ({type(e).__name__}: {e}); run this test where it does "
                    f"(tox -e torch214 -- tests/test_preprocessing.py)")
    import torch

    t = torch.from_numpy(RAW.copy()).permute(0, 3, 1, 2)
    theirs = torch.stack([transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(
        transforms.functional.to_tensor(img.permute(1, 2, 0).numpy())) for img in t])
    np.testing.assert_array_equal(P.get("torchvision").apply(RAW), theirs.permute(0, 2, 3, 1).numpy())
    fn, by = P.library_function(P.get("torchvision"))
    assert "torchvision.transforms.Normalize" in by
    np.testing.assert_array_equal(fn(RAW), theirs.permute(0, 2, 3, 1).numpy())


def test_without_torchvision_the_record_stands_in_and_says_why():
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001
        fn, why = P.library_function(P.get("torchvision"))
        assert fn is None and why.startswith("torchvision does not import")
    else:
        pytest.skip("torchvision imports here: test_torchvision_record_against_real_torchvision_normalize runs it")


def test_slim_records_match_the_tensorflow_ops_of_slims_preprocessing():
    """tf_slim ships no preprocessing; tensorflow/models' research/slim/preprocessing does, with
    these TensorFlow ops: inception_preprocessing (convert_image_dtype to [0, 1], subtract 0.5,
    multiply by 2) and vgg_preprocessing (to_float, subtract _R_MEAN 123.68, _G_MEAN 116.78,
    _B_MEAN 103.94 per channel)."""
    import tensorflow as tf

    fn, why = P.library_function(P.get("slim-vgg"))
    assert fn is None and "tf_slim ships no preprocessing" in why
    image = tf.constant(RAW)
    inception = tf.multiply(tf.subtract(tf.image.convert_image_dtype(image, tf.float32), 0.5), 2.0).numpy()
    np.testing.assert_allclose(P.get("slim-inception").apply(RAW), inception, rtol=0, atol=2.5e-7)
    channels = tf.split(tf.cast(image, tf.float32), 3, axis=3)
    vgg = tf.concat([c - m for c, m in zip(channels, (123.68, 116.78, 103.94))], axis=3).numpy()
    np.testing.assert_array_equal(P.get("slim-vgg").apply(RAW), vgg)


def test_which_conventions_agree():
    g = P.get
    assert g("slim-inception").same_as(g("keras-tf"))  # (x/255 - 0.5) / 0.5 is x/127.5 - 1
    assert not g("slim-vgg").same_as(g("keras-caffe"))  # RGB against BGR
    assert not g("torchvision").same_as(g("keras-tf"))
    # slim's VGG and keras' caffe differ in the channel order and a mean rounded to 2 or 3 decimals
    np.testing.assert_allclose(g("slim-vgg").apply(RAW), g("keras-caffe").apply(RAW)[..., ::-1], rtol=0, atol=1.1e-3)


def test_formulas_are_exact_and_readable():
    assert P.get("keras-caffe").formula() == "x[..., ::-1] - [103.939, 116.779, 123.68]"
    assert P.get("keras-tf").formula() == "x / 127.5 - 1"
    assert P.get("torchvision").formula() == "(x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]"
    assert P.get("none").formula() == "x"
    for p in P.RECORDS.values():  # the formula computes what apply does
        x = RAW.astype(np.float64)  # noqa: F841 - named in the formula
        np.testing.assert_allclose(eval(p.formula()), p.apply(RAW), rtol=1e-6, atol=1e-5)  # noqa: S307


def test_raw_images_are_refused_unless_uint8_rgb_nhwc():
    with pytest.raises(EquivError, match="must be uint8"):
        P.get("keras-tf").apply(RAW.astype(np.float32))
    with pytest.raises(EquivError, match="NHWC with 3 channels"):
        P.get("keras-tf").apply(RAW[0])
    with pytest.raises(EquivError, match="unknown preprocessing 'bgr'"):
        P.get("bgr")
    with pytest.raises(ValueError, match="unknown preprocessing"):
        V.get("torchvision/resnet18").replace(preprocessing="bgr")
    with pytest.raises(EquivError, match="run them apart"):
        check("torchvision/resnet18", ["torch", "keras"], input_size=(32, 32), batch=1, raw_images=True, isolated=True)


def test_raw_images_catch_rgb_against_bgr_at_the_input_tap():
    """slim's resnet_v1 convention (VGG: RGB minus the mean) against keras.applications' ResNet
    (caffe: BGR minus the mean, computed by keras' own preprocess_input): the same raw image, two
    channel orders. The check fails first at the tap `input`, on a red or blue channel, and says
    both transforms."""
    r = check("slim/resnet_v1_50", ["slim", "keras"], input_size=(32, 32), batch=1, raw_images=True)
    assert not r.equivalent and r.first.name == "input" and r.taps[0].name == "input"
    assert r.first.worst_index[-1] in (0, 2) and r.first.rel > 0.5
    assert r.settings["raw_images"] == {"slim": "slim-vgg", "keras": "keras-caffe"}
    said = "\n".join(r.notes)
    assert "computed by keras.applications.resnet.preprocess_input" in said
    assert ("the preprocessings differ at the input: slim feeds slim-vgg: RGB, x - [123.68, 116.78, 103.94], "
            "keras feeds keras-caffe: BGR, x[..., ::-1] - [103.939, 116.779, 123.68]") in said


def equiv(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "equiv.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_raw_images_from_a_npy_file_through_matching_conventions_is_equivalent(tmp_path):
    """slim's resnet_v2 (Inception: (x/255 - 0.5) * 2) and keras' V2 (x / 127.5 - 1, by keras'
    preprocess_input) agree, so a check from raw images passes, input tap included."""
    np.save(tmp_path / "raw.npy", np.random.default_rng(3).integers(0, 256, (1, 32, 33, 3), dtype=np.uint8))
    out = tmp_path / "r.json"
    r = equiv("check", "slim/resnet_v2_50", "--frameworks", "slim,keras", "--raw-images", str(tmp_path / "raw.npy"),
              "--json", str(out), "-q")
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stderr == ""
    data = json.loads(out.read_text())
    assert data["taps"][0]["name"] == "input" and data["taps"][0]["shape"] == [1, 32, 33, 3]
    assert data["settings"]["input_size"] == [32, 33] and data["settings"]["batch"] == 1
    assert data["settings"]["raw_images"] == {"slim": "slim-inception", "keras": "keras-tf"}
    assert "input of keras: keras-tf: RGB, x / 127.5 - 1, computed by keras.applications.resnet_v2" in r.stdout


def test_cli_raw_images_names_both_transforms_where_they_differ(tmp_path):
    out = tmp_path / "r.json"
    r = equiv("check", "torchvision/resnet18", "--frameworks", "torch,keras", "--input-size", "32", "32",
              "--batch", "1", "--raw-images", "--json", str(out), "--plot", str(tmp_path / "r.png"), "-q")
    assert r.returncode == 1, r.stderr + r.stdout
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
    assert "first divergence at tap input (torch vs keras)" in r.stdout
    text = " ".join(r.stdout.split())
    assert ("torch feeds torchvision: RGB, (x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], keras feeds "
            "keras-caffe: BGR, x[..., ::-1] - [103.939, 116.779, 123.68]") in text
    assert json.loads(out.read_text())["first_divergence"] == "input"


@pytest.mark.parametrize("make,args,message", [
    (lambda: np.zeros((1, 32, 32, 3), np.float32), [], "holds float32 values; equiv runs raw images as uint8"),
    (lambda: np.zeros((1, 32, 32, 4), np.uint8), [], "NHWC with 3 channels"),
    (lambda: np.zeros((1, 32, 32, 3), np.uint8), ["--input-size", "64", "64"], "holds 32x32 images; --input-size"),
])
def test_cli_raw_images_file_is_checked_before_any_work(tmp_path, make, args, message):
    np.save(tmp_path / "raw.npy", make())
    r = equiv("check", "torchvision/resnet18", "--frameworks", "torch,keras", "--raw-images",
              str(tmp_path / "raw.npy"), *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_cli_variants_shows_each_convention(tmp_path):
    r = equiv("variants", "--json", str(tmp_path / "v.json"))
    assert r.returncode == 0, r.stderr
    assert "input its weights expect" in r.stdout
    for name in ("slim-vgg", "slim-inception", "keras-caffe", "keras-tf", "torchvision:"):
        assert name in r.stdout
    listed = {d["name"]: d["preprocessing"] for d in json.loads((tmp_path / "v.json").read_text())}
    assert listed["keras/ResNet50"]["channel_order"] == "BGR"
    assert listed["keras/ResNet50"]["mean"] == [103.939, 116.779, 123.68]
    assert listed["torchvision/resnet50"]["std"] == [0.229, 0.224, 0.225]
    assert listed["slim/resnet_v2_50"]["formula"] == "(x / 255 - 0.5) / 0.5"
    assert listed["seed/torch_resnet_v2"]["name"] == "none"


def test_cli_port_says_what_the_target_must_be_fed(tmp_path):
    v = V.get("torchvision/resnet18")
    files.write(weights.random_params(v, 0), tmp_path / "r18.safetensors", v)
    r = equiv("port", "torchvision/resnet18", "--from", str(tmp_path / "r18.safetensors"),
              "--to", str(tmp_path / "r18.weights.h5"), "--json", str(tmp_path / "p.json"), "-q")
    assert r.returncode == 0, r.stderr
    assert ("input: the weights of torchvision/resnet18 (from torch) expect torchvision: RGB, (x / 255 - "
            "[0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]; keras' own convention for this network is "
            "keras-caffe: BGR, x[..., ::-1] - [103.939, 116.779, 123.68]: feed the target (x / 255 - "
            "[0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]") in r.stdout
    assert "not keras.applications.resnet.preprocess_input, or the predictions differ" in r.stdout
    data = json.loads((tmp_path / "p.json").read_text())["preprocessing"]
    assert data["differ"] is True and data["target_convention"]["name"] == "keras-caffe"
    # back to torch: the target's own convention is the weights' one
    r = equiv("port", "torchvision/resnet18", "--from", str(tmp_path / "r18.safetensors"),
              "--to", str(tmp_path / "r18.pt"), "-q")
    assert r.returncode == 0, r.stderr
    assert "torch's own convention for this network is torchvision, the same" in r.stdout


def test_diff_says_where_two_variants_expect_different_inputs():
    from equiv.checking import diff

    r = diff("keras/ResNet50V2", "slim/resnet_v2_50", input_size=(32, 32), batch=1)
    assert ("input: keras/ResNet50V2 expects keras-tf: RGB, x / 127.5 - 1, slim/resnet_v2_50 slim-inception: "
            "RGB, (x / 255 - 0.5) / 0.5 (the same numbers)") in r.notes
