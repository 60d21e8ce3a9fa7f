"""equiv.tf_reader: a checkpoint's tensors read without TensorFlow, against TensorFlow's own reader
(`tf.train.load_checkpoint(...).get_tensor`) on files TensorFlow wrote."""

import numpy as np
import pytest

from equiv import tf_index, tf_reader
from equiv.errors import EquivError

tf = pytest.importorskip("tensorflow")
pytest.importorskip("google_crc32c", reason="google-crc32c is not installed: TensorFlow's reader reads instead")

DTYPES = {"f32": np.float32, "f64": np.float64, "f16": np.float16}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A TF2 object checkpoint TensorFlow wrote: float32/64/16 variables of odd shapes, a bfloat16
    one (TensorFlow's reader takes it), a scalar, and the object graph (a string)."""
    rng = np.random.default_rng(0)
    variables = {k: tf.Variable(rng.standard_normal((3, 5, 7)).astype(d)) for k, d in DTYPES.items()}
    variables["bf16"] = tf.Variable(tf.cast(rng.standard_normal((4, 4)), tf.bfloat16))
    variables["scalar"] = tf.Variable(np.float32(2.5))
    variables["empty"] = tf.Variable(np.zeros((0, 3), np.float32))
    prefix = tf.train.Checkpoint(**variables).write(str(tmp_path_factory.mktemp("ckpt") / "model"))
    return prefix


def _key(name: str) -> str:
    return f"{name}/.ATTRIBUTES/VARIABLE_VALUE"


def test_every_tensor_reads_bit_for_bit_as_tensorflow_reads_it(checkpoint):
    entries = tf_index.read(checkpoint)
    theirs = tf.train.load_checkpoint(checkpoint)
    get = tf_reader.reader(checkpoint, entries)
    taken_here = []
    for name in [_key(k) for k in (*DTYPES, "bf16", "scalar", "empty")]:
        mine, ref = get(name), theirs.get_tensor(name)
        assert mine.dtype == ref.dtype and mine.shape == ref.shape, name
        assert mine.tobytes() == ref.tobytes(), name
        if tf_reader.readable(entries[name]):
            taken_here.append(name.split("/")[0])
    # the float tensors are this reader's own; bfloat16 goes to TensorFlow's
    assert sorted(taken_here) == sorted([*DTYPES, "scalar", "empty"])


def test_a_damaged_byte_is_refused_by_its_checksum_naming_the_file_and_tensor(checkpoint, tmp_path):
    import shutil

    prefix = str(tmp_path / "model")
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copyfile(checkpoint + suffix, prefix + suffix)
    entry = tf_index.read(prefix)[_key("f64")]
    with open(entry.file, "r+b") as f:
        f.seek(entry.offset + entry.size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    # TensorFlow's own reader agrees that the file is damaged (an independent check of the damage)
    with pytest.raises(tf.errors.OpError, match="Checksum does not match"):
        tf.train.load_checkpoint(prefix).get_tensor(_key("f64"))
    with pytest.raises(EquivError, match=rf"{prefix}: {_key('f64')}: .*checksum"):
        tf_reader.read(entry, prefix, _key("f64"))
    # the undamaged tensors still read
    assert tf_reader.read(tf_index.read(prefix)[_key("f32")], prefix, _key("f32")).shape == (3, 5, 7)


def test_without_google_crc32c_tensorflows_reader_reads(checkpoint, monkeypatch):
    monkeypatch.setattr(tf_reader, "_crc32c", lambda: None)
    entries = tf_index.read(checkpoint)
    assert not tf_reader.readable(entries[_key("f32")])
    mine = tf_reader.reader(checkpoint, entries)(_key("f32"))
    assert mine.tobytes() == tf.train.load_checkpoint(checkpoint).get_tensor(_key("f32")).tobytes()


def test_mask_inverts_leveldbs_mask():
    # LevelDB's mask (crc32c.h), computed forward here: rotate right by 15 bits, add a constant
    for crc in (0, 1, 0xDEADBEEF, 0xFFFFFFFF, 0x12345678):
        masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
        assert tf_reader._unmask(masked) == crc
