"""Reading the formats equiv only reads: Keras 2 .h5 files and Keras 3 .keras archives,
written in each test by that framework's own saving API."""

from __future__ import annotations

import numpy as np
import pytest

from equiv import files, formats
from equiv import variants as V
from equiv.errors import EquivError, ParamMismatchError
from equiv.frameworks import FRAMEWORKS, adapter

KERAS_NAMES = {"keras/ResNet50": "ResNet50", "keras/ResNet50V2": "ResNet50V2"}


def _weights_by_layer(model) -> dict[str, np.ndarray]:
    """A Keras model's own view of its weights: layer name / weight name -> array."""
    out = {}
    for layer in model.layers:
        for w in layer.weights:
            out[f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}"] = np.asarray(w.numpy())
    return out


@pytest.mark.parametrize("name", list(KERAS_NAMES))
@pytest.mark.parametrize("whole_model", [True, False], ids=["model", "weights"])
def test_reads_keras2_h5_written_by_tf_keras(name, whole_model, tmp_path):
    import tf_keras

    v = V.get(name)
    model = getattr(tf_keras.applications, KERAS_NAMES[name])(weights=None, input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path / "legacy.h5"
    (model.save if whole_model else model.save_weights)(str(path), save_format="h5")
    assert files.detect(path) == "keras2-h5"
    params = files.read(path, v)
    names = adapter("keras").framework_names(v)
    theirs = _weights_by_layer(model)
    assert set(names.values()) == set(theirs)
    for canonical_name, keras_name in names.items():
        assert np.array_equal(params[canonical_name], theirs[keras_name]), canonical_name


def _random_keras_model(name: str, seed: int):
    """A Keras model of `name` as equiv builds it, with random weights set through Keras itself."""
    v = V.get(name)
    ad = adapter("keras")
    model = ad.build(v)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
    return v, ad, model


def test_reads_the_weights_of_a_keras_archive_without_running_its_config(tmp_path):
    import keras

    v, ad, model = _random_keras_model("keras/ResNet50V2", 1)
    path = tmp_path / "m.keras"
    model.save(str(path))
    assert files.detect(path) == "keras-archive"
    got = files.read(path, v)
    want = ad.export_params(v, model)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    # Keras' own safe loader agrees that the archive holds that model
    loaded = keras.saving.load_model(str(path), safe_mode=True)
    assert len(loaded.weights) == len(model.weights)


def test_keras2_h5_of_another_variant_is_refused_with_the_parameter_named(tmp_path):
    import tf_keras

    model = tf_keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "r50.h5"
    model.save_weights(str(path), save_format="h5")
    with pytest.raises(ParamMismatchError, match=str(path)) as e:
        files.read(path, V.get("keras/ResNet101"))
    assert e.value.missing[0].startswith("stage3/unit7")


def test_read_only_formats_cannot_be_written(tmp_path):
    v = V.get("torchvision/resnet18")
    with pytest.raises(EquivError, match="read only"):
        files.write({}, tmp_path / "x.keras", v)
    assert not any(tmp_path.iterdir())


def test_format_detection_by_name_and_content(tmp_path):
    assert files.detect(tmp_path / "a.safetensors") == "safetensors"
    assert files.detect(tmp_path / "a.pth") == "torch"
    assert files.detect(tmp_path / "a.weights.h5", reading=False) == "keras-weights"
    assert files.detect(tmp_path / "model.ckpt") == "tf-checkpoint"
    odd = tmp_path / "weights.bin"
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2, np.float32)}, str(odd))
    assert files.detect(odd) == "safetensors"
    with pytest.raises(EquivError, match="cannot tell its format"):
        files.detect(tmp_path / "nothing.xyz")
    with pytest.raises(EquivError, match="unknown format"):
        files.detect(odd, "tflite")  # onnx is a format now (the onnx backend)


def test_reads_a_tf2_object_checkpoint_of_a_keras_model(tmp_path):
    import tensorflow as tf

    v, ad, model = _random_keras_model("keras/ResNet50", 2)
    prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "tf2" / "ckpt"))
    assert files.detect(prefix) == "tf-checkpoint"
    got = files.read(prefix, v)
    want = ad.export_params(v, model)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    with pytest.raises(ParamMismatchError, match="ckpt"):
        files.read(prefix, V.get("keras/ResNet101"))
    from equiv.porting import looks_like  # by its sorted shapes: a Keras model's, in the canonical layout

    assert looks_like(prefix, "tf-checkpoint", V.get("keras/ResNet101")) == "keras/ResNet50"


def test_keras_weights_of_another_variant_name_the_canonical_parameter(tmp_path):
    import keras

    path = tmp_path / "r50.weights.h5"
    keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)).save_weights(str(path))
    with pytest.raises(ParamMismatchError, match=str(path)) as e:
        files.read(path, V.get("keras/ResNet101"))
    # read by position, ResNet50's stage 4 lands where ResNet101's stage 3 goes on: named there
    assert e.value.mismatched[0][0] == "stage3/unit7/conv1/kernel"
    assert "stage3/unit7/conv1/kernel expected (1, 1, 1024, 256), found (1, 1, 1024, 512)" in str(e.value)
    with pytest.raises(ParamMismatchError) as e:
        files.read(path, V.get("keras/ResNet50", num_classes=10))
    assert [m[0] for m in e.value.mismatched] == ["logits/kernel", "logits/bias"]


@pytest.mark.parametrize("fmt", [f for f in formats.WRITABLE if f != "tf-checkpoint"])  # a prefix has no content
def test_every_writable_format_is_told_by_its_content_alone(tmp_path, fmt):
    """Each record's writer writes what its own sniff (and no earlier record's) recognises, under
    a name that says nothing, and its reader reads it back bit for bit."""
    from tests.fuzzing import TINY, tiny_params

    record = formats.get(fmt)
    assert record.owner is None or record.owner in FRAMEWORKS
    suffix = record.suffixes[0]
    (written,) = files.write(tiny_params(), tmp_path / f"w{suffix}", TINY)
    blob = tmp_path / "blob"
    blob.write_bytes(written.read_bytes())
    assert files.detect(blob) == fmt
    back = files.read(blob, TINY)
    assert all(np.array_equal(back[k], a) for k, a in tiny_params().items())


def test_format_records_resolve():
    for record in formats.REGISTRY.values():
        assert callable(record.read()) and callable(record.fit_to()), record.name
        assert record.writer is None or callable(record.write()), record.name
        assert record.owner is None or record.owner in FRAMEWORKS
        assert record.declared is None or callable(formats._resolve(record.declared)), record.name


def test_a_zip_of_no_known_format_is_not_claimed_by_torch(tmp_path):
    """torch's sniff claims torch.save archives (a `data.pkl` member) and damaged zips, not every zip:
    a zip-based format may be registered after it (an .npz here is no format of equiv's)."""
    import torch

    npz = tmp_path / "blob"
    np.savez(npz, a=np.zeros(2, np.float32))
    with pytest.raises(EquivError, match="cannot tell its format"):
        files.detect(tmp_path / "blob.npz")
    pt = tmp_path / "state"
    torch.save({"a": torch.zeros(2)}, pt)
    assert files.detect(pt) == "torch"
    damaged = tmp_path / "damaged"
    damaged.write_bytes(pt.read_bytes()[:40])
    assert files.detect(damaged) == "torch"  # torch's reader then says what is wrong with it
