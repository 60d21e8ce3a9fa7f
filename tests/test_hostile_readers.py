"""Weight files crafted to attack the readers (issue 12): data stored outside the file, sizes
declared far beyond what is there or needed, shapes that crash native readers, integers posing
as weights. Each is made here, read through equiv, and must fail with exit 2 and one line
naming the file and what is wrong, with nothing written and nothing of another file shown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from equiv import canonical as C
from equiv import files, limits, safetensors_reader
from equiv import variants as V
from equiv.cli import main
from equiv.errors import EquivError
from equiv.porting import looks_like
from tests import fuzzing as F

R18 = V.get("torchvision/resnet18")
# A deflate bomb a quarter beyond the most any registered variant's file can hold (float64 weights of the
# largest: VGG-19's, 1.2 GB), so that a size check, not a lucky read, refuses it.
BOMB_GB = 1.25 * limits.max_file_bytes(None) / 2**30
SECRET = b"TOKEN=s3cr3t-0123456789abcdef\n"  # ASCII reads as finite float32: the NaN check cannot see it


@pytest.fixture(autouse=True)
def _restore_allocator_setting(monkeypatch):
    monkeypatch.delenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", raising=False)


def port(capsys, src, dst, variant=R18.name):
    """`equiv port` in this process: (exit status, stdout, stderr)."""
    code = main(["port", variant, "--from", str(src), "--to", str(dst), "-q"])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *parts):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("equiv: error: "), err
    for part in parts:
        assert part in err, (part, err)


@pytest.fixture(scope="module")
def r18_h5(tmp_path_factory) -> Path:
    """A Keras 2 `.h5` of resnet18 that ports (exit 0) as it is."""
    path = tmp_path_factory.mktemp("r18") / "r18.h5"
    F.write_keras2_h5(path, {k: np.full(s, 0.5, np.float32) for k, s in C.param_shapes(R18).items()}, R18)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    return {fmt: F.write_valid(fmt, folder / fmt, F.tiny_params()) for fmt in F.FORMATS}


def case(tiny, fmt, tmp_path) -> Path:
    return F.copy_case(fmt, tiny[fmt], tmp_path / "case")


# ---------------------------------------------------------------------------------------
# HDF5: only data stored in the file itself


def test_the_unchanged_keras2_file_ports(r18_h5, tmp_path, capsys):
    """The control: the attacks below change one dataset of this file."""
    code, _, err = port(capsys, r18_h5, tmp_path / "out.safetensors")
    assert code == 0, err


def test_external_raw_storage_is_refused_and_no_byte_of_the_secret_reaches_any_output(r18_h5, tmp_path, capsys):
    secret = tmp_path / "secret.env"
    secret.write_bytes(SECRET * 200_000)
    evil = tmp_path / "evil.h5"
    shutil.copy(r18_h5, evil)
    name = F.h5_external_storage(evil, secret, which=3)
    out = tmp_path / "out.safetensors"
    code, stdout, err = port(capsys, evil, out)
    one_line_error(code, err, str(evil), name, "external raw storage", str(secret))
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    assert SECRET[:12].decode() not in stdout + err
    assert all(SECRET[:12] not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != secret)


@pytest.mark.parametrize("attack", ["external link", "virtual dataset", "soft link"])
def test_links_and_virtual_datasets_are_refused_naming_the_dataset(attack, r18_h5, tmp_path, capsys):
    evil = tmp_path / "evil.h5"
    shutil.copy(r18_h5, evil)
    if attack == "external link":
        name, why = F.h5_external_link(evil, tmp_path / "other.h5"), "an external link to /x in"
    elif attack == "virtual dataset":
        name, why = F.h5_virtual(evil, tmp_path / "other.h5"), "a virtual dataset"
    else:
        name, why = F.h5_soft_link_out(evil), "a soft link to /outside/x, outside the weights (/model_weights)"
    code, _, err = port(capsys, evil, tmp_path / "out.safetensors")
    one_line_error(code, err, str(evil), name, why)
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(EquivError, match="reads only weights stored in the file itself"):
        files.keras_shapes(evil, "keras2-h5")  # the shape search ("looks like") walks the same way
    assert looks_like(evil, "keras2-h5", V.get("torchvision/resnet34")) is None


def test_every_hdf5_reader_refuses_external_storage(tiny, tmp_path):
    """Keras 3 `.weights.h5` and the one inside a `.keras` archive, before Keras reads them."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET * 100)
    path = case(tiny, "keras-weights", tmp_path)
    name = F.h5_external_storage(path, secret)
    with pytest.raises(EquivError) as e:
        files.read(path, F.TINY)
    assert str(path) in str(e.value) and name in str(e.value) and "external raw storage" in str(e.value)
    archive = case(tiny, "keras-archive", tmp_path)
    F.change_inner(archive, lambda inner: F.h5_virtual(inner, tmp_path / "other.h5"))
    with pytest.raises(EquivError, match="virtual dataset") as e:
        files.read(archive, F.TINY)
    assert str(archive) in str(e.value)


def test_an_hdf5_dataset_declaring_gigabytes_is_refused_before_it_is_read(tiny, tmp_path):
    for fmt in ("keras-weights", "keras2-h5"):
        path = case(tiny, fmt, tmp_path / fmt)
        name = F.h5_huge(path, elements=2**31)
        with pytest.raises(EquivError, match=r"declares 2147483648 elements") as e:
            files.read(path, F.TINY)
        assert name in str(e.value)


# ---------------------------------------------------------------------------------------
# Declared sizes before data


def test_a_sparse_safetensors_file_declaring_gigabytes_is_refused(tmp_path, capsys):
    path = tmp_path / "sparse.safetensors"
    F.safetensors_declaring(path, "stage1/unit1/conv1/kernel", [2**30])  # 4 GB apparent, nothing on disk
    code, _, err = port(capsys, path, tmp_path / "out.pt")
    one_line_error(code, err, str(path), "stage1/unit1/conv1/kernel declares 1073741824 elements")


@pytest.mark.parametrize("length", [2**40, 20 * 1024 * 1024])
def test_a_huge_safetensors_header_is_refused_without_reading_it(length, tmp_path, capsys):
    path = tmp_path / "header.safetensors"
    with open(path, "wb") as f:
        f.write(length.to_bytes(8, "little"))
        f.truncate(8 + min(length, 20 * 1024 * 1024))
    code, _, err = port(capsys, path, tmp_path / "out.pt")
    one_line_error(code, err, str(path), f"its header declares {length} bytes")


def test_a_safetensors_file_cut_short_is_an_error_not_a_crash(tiny, tmp_path, capsys):
    path = case(tiny, "safetensors", tmp_path)
    size = path.stat().st_size
    entries = safetensors_reader.header(path)
    os.truncate(path, size - 100)  # as if cut while being read: between the header and the data
    with pytest.raises(EquivError, match="cut short while it was read"):
        safetensors_reader.read(path, entries, list(entries))
    code, _, err = port(capsys, path, tmp_path / "out.pt")  # cut before: the header no longer fits the file
    one_line_error(code, err, str(path), "not a readable safetensors file", "data bytes")


@pytest.mark.parametrize("shape", [[-1], [2**31] * 3])
def test_a_checkpoint_index_with_an_impossible_shape_never_reaches_tensorflow(shape, tiny, tmp_path, capsys):
    prefix = case(tiny, "tf-checkpoint", tmp_path)

    def change(name, entry):
        if name.endswith("conv1/weights"):
            del entry.shape.dim[:]
            for d in shape:
                entry.shape.dim.add(size=d)

    F.rewrite_index(prefix, change)
    code, _, err = port(capsys, prefix, tmp_path / "out.pt")
    one_line_error(code, err, str(prefix), "conv1/weights")
    assert str(shape) in err or "declares" in err


def test_the_index_as_equiv_reads_it_is_the_index_as_tensorflow_reads_it(tiny, tmp_path):
    import tensorflow as tf

    from equiv import tf_index

    reader = tf.train.load_checkpoint(str(tiny["tf-checkpoint"]))
    ours = tf_index.read(str(tiny["tf-checkpoint"]))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    assert {n: e.shape for n, e in ours.items()} == {n: tuple(s) for n, s in shapes.items()}
    assert {n: e.dtype_name() for n, e in ours.items()} == {n: d.name for n, d in dtypes.items()}


def test_tensorflow_itself_aborts_on_that_index(tiny, tmp_path):
    """What the check above prevents: TensorFlow's reader kills the process (SIGABRT)."""
    prefix = case(tiny, "tf-checkpoint", tmp_path)

    def change(name, entry):
        if name.endswith("conv1/weights"):
            entry.shape.dim[0].size = -1

    F.rewrite_index(prefix, change)
    r = subprocess.run([sys.executable, "-c", f"import tensorflow as tf; tf.train.load_checkpoint({str(prefix)!r})"
                        ".get_variable_to_shape_map()"], capture_output=True, text=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=120)
    assert r.returncode == -6, r.returncode


def test_a_deflate_bombed_torch_zip_is_refused_by_its_declared_sizes(tiny, tmp_path, capsys):
    path = case(tiny, "torch", tmp_path)
    F.zip_bomb(path, gigabytes=BOMB_GB)
    assert path.stat().st_size < 8 * 1024 * 1024
    code, _, err = port(capsys, path, tmp_path / "out.safetensors")
    # bounded by the variant asked for first, then every registered one (equiv.limits)
    one_line_error(code, err, str(path), "its zip members unpack to ", "more than the weights of ",
                   "any registered variant")


def test_a_keras_archive_whose_weights_unpack_to_gigabytes_is_refused(tiny, tmp_path):
    archive = case(tiny, "keras-archive", tmp_path)
    F.zip_bomb(archive, gigabytes=BOMB_GB)
    with pytest.raises(EquivError, match="its model.weights.h5 unpacks to .* more than the weights of .*any regist"):
        files.read(archive, F.TINY)


# ---------------------------------------------------------------------------------------
# Only floating dtypes


@pytest.mark.parametrize("fmt", ["safetensors", "keras2-h5", "keras-weights", "tf-checkpoint", "torch"])
def test_integer_weights_are_refused_naming_the_parameter_and_its_dtype(fmt, tiny, tmp_path):
    path = case(tiny, fmt, tmp_path)
    if fmt == "safetensors":
        name, dtype = F.safetensors_retype(path, "I32", which=5), "I32"
    elif fmt in ("keras2-h5", "keras-weights"):
        name, dtype = F.h5_retype(path, "int64", which=5), "int64"
    elif fmt == "tf-checkpoint":
        name, dtype = F.tf_retype(path, which=5), "int32"
    else:
        name, dtype = F.torch_retype(path, which=5), "int32"
    with pytest.raises(EquivError) as e:
        files.read(path, F.TINY)
    message = str(e.value)
    assert str(path) in message and name in message and dtype in message and "floating point" in message, message


def test_half_and_double_precision_are_read_as_float32(tiny, tmp_path):
    params = F.tiny_params()
    path = case(tiny, "safetensors", tmp_path)
    F._resave_safetensors(path, lambda d: d.update({k: a.astype(np.float16 if i % 2 else np.float64)
                                                    for i, (k, a) in enumerate(sorted(d.items()))}))
    got = files.read(path, F.TINY)
    for i, k in enumerate(sorted(params)):
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], params[k].astype(np.float16 if i % 2 else np.float64).astype(np.float32))


# ---------------------------------------------------------------------------------------
# "Looks like": one read, whatever the number of variants


def test_looks_like_reads_a_safetensors_header_once(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from equiv import porting

    path = tmp_path / "r34.safetensors"
    save_file({k: np.zeros(s, np.float32) for k, s in C.param_shapes(V.get("torchvision/resnet34")).items()}, str(path))
    calls = []
    real = safetensors_reader.header
    monkeypatch.setattr(safetensors_reader, "header", lambda p: calls.append(p) or real(p))
    assert porting.looks_like(path, "safetensors", R18) == "torchvision/resnet34"
    # once for the scan over every candidate, once more by the read that confirms the one that fits
    # (a hint is given only for what loads): not once per candidate
    assert len(calls) == 2
