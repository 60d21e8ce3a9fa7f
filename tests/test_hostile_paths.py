"""Hostile paths and arguments: every path equiv reads or writes is checked before any work.

Each case runs the real command in a child process (a FIFO that hangs the reader then fails
on the timeout rather than hanging the suite) and asserts exit 2, exactly one line on stderr
naming the path, every file of the folder byte for byte as before, and no output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from equiv import files
from equiv import variants as V
from equiv import weights as W
from equiv.errors import EquivError, UnsafeFileError

ROOT = Path(__file__).resolve().parents[1]
R18 = V.get("torchvision/resnet18")
TIMEOUT = 60  # a FIFO opened by mistake blocks forever: fail, never hang


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    return files.write(W.random_params(R18, 0), tmp_path_factory.mktemp("w") / "in.safetensors", R18)[0]


@pytest.fixture
def folder(tmp_path, weights_file) -> Path:
    """A working folder with a valid weight file and a valid input."""
    shutil.copyfile(weights_file, tmp_path / "in.safetensors")
    np.save(tmp_path / "x.npy", W.random_input(R18, 1, 32, 32))
    return tmp_path


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: a file's hash, else what it is (read without opening FIFOs)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(folder))] = stat.filemode(st.st_mode)[0]
    return out


def equiv(cwd: Path, *args, env=None, wrapper: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "equiv.cli"] if wrapper is None else [sys.executable, "-c", wrapper]
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                          env=dict(env or os.environ, PYTHONPATH=str(ROOT)))


def assert_refused(r: subprocess.CompletedProcess, *parts: str) -> str:
    lines = r.stderr.splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("equiv: error: "), r.stderr[-2000:]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def refused_untouched(folder: Path, *args, parts=(), **kw) -> str:
    before = snapshot(folder)
    line = assert_refused(equiv(folder, *args, **kw), *parts)
    assert snapshot(folder) == before  # no input changed, no output appeared, no staging left
    return line


# ---------------------------------------------------------------------------------------
# No output is an input or another output, however it is named


def _alias(folder: Path, how: str) -> list[str]:
    """The command of each case; the files it needs are made here."""
    port = ["port", R18.name, "--from", "in.safetensors"]
    run = ["run", R18.name, "--weights", "in.safetensors", "--framework", "torch", "--input", "x.npy"]
    if how == "json-is-the-source":
        return [*port, "--to", "x.pt", "--json", "in.safetensors", "--force"]
    if how == "json-is-the-target":
        (folder / "x.safetensors").write_bytes(b"old")
        return [*port, "--to", "x.safetensors", "--json", "./x.safetensors", "--force"]
    if how == "target-is-a-hard-link-of-the-source":
        os.link(folder / "in.safetensors", folder / "hard.safetensors")
        return [*port, "--to", "hard.safetensors", "--force"]
    if how == "source-is-a-symlink-to-the-target":
        os.symlink("in.safetensors", folder / "sym.safetensors")
        return ["port", R18.name, "--from", "sym.safetensors", "--to", "./in.safetensors", "--force"]
    if how == "target-through-dot-dot":
        (folder / "sub").mkdir()
        return [*port, "--to", "sub/../in.safetensors", "--force"]
    if how == "checkpoint-target-data-is-the-source":
        os.link(folder / "in.safetensors", folder / "ck.ckpt.data-00000-of-00001")
        return [*port, "--to", "ck.ckpt", "--force"]
    if how == "target-is-a-data-file-of-the-checkpoint-source":
        (folder / "m.ckpt.index").write_bytes(b"index")
        (folder / "m.ckpt.data-00000-of-00001").write_bytes(b"data")
        return ["port", R18.name, "--from", "m.ckpt", "--to", "m.ckpt.data-00000-of-00001",
                "--to-format", "safetensors", "--force"]
    if how == "run-output-is-the-input":
        return [*run, "--output", "x.npy", "--force"]
    if how == "run-output-is-the-weights":
        os.link(folder / "in.safetensors", folder / "w.npz")
        return [*run[:3], "w.npz", "--format", "safetensors", *run[4:], "--output", "w.npz", "--force"]
    raise AssertionError(how)


@pytest.mark.parametrize("how", [
    "json-is-the-source", "json-is-the-target", "target-is-a-hard-link-of-the-source",
    "source-is-a-symlink-to-the-target", "target-through-dot-dot", "checkpoint-target-data-is-the-source",
    "target-is-a-data-file-of-the-checkpoint-source", "run-output-is-the-input", "run-output-is-the-weights"])
def test_an_output_that_is_an_input_or_another_output_is_refused(how, folder):
    args = _alias(folder, how)
    line = refused_untouched(folder, *args)
    assert "would overwrite the input" in line or "name the same file" in line


# ---------------------------------------------------------------------------------------
# Inputs are regular files: said by what they are, never opened


def _odd_input(folder: Path, what: str) -> list[str]:
    port = ["port", R18.name, "--to", "o.safetensors"]
    run = ["run", R18.name, "--framework", "torch", "--output", "o.npz"]
    if what == "fifo-weights":
        os.mkfifo(folder / "w.safetensors")
        return [*port, "--from", "w.safetensors"]
    if what == "fifo-weights-named-by-format":
        os.mkfifo(folder / "w")
        return [*port, "--from", "w", "--from-format", "torch"]
    if what == "fifo-checkpoint-index":
        os.mkfifo(folder / "m.ckpt.index")
        (folder / "m.ckpt.data-00000-of-00001").write_bytes(b"data")
        return [*port, "--from", "m.ckpt"]
    if what == "fifo-checkpoint-data":
        (folder / "m.ckpt.index").write_bytes(b"index")
        os.mkfifo(folder / "m.ckpt.data-00000-of-00001")
        return [*port, "--from", "m.ckpt"]
    if what == "directory-weights":
        (folder / "d.pt").mkdir()
        return [*port, "--from", "d.pt"]
    if what == "device-weights":
        return [*port, "--from", "/dev/zero", "--from-format", "safetensors"]
    if what == "fifo-run-input":
        os.mkfifo(folder / "f.npy")
        return [*run, "--weights", "in.safetensors", "--input", "f.npy"]
    if what == "fifo-run-weights":
        os.mkfifo(folder / "f.pt")
        return [*run, "--weights", "f.pt", "--input", "x.npy"]
    raise AssertionError(what)


_KIND = {"fifo": "is a FIFO, not a regular file", "directory": "is a directory, not a regular file",
         "device": "is a character device, not a regular file"}


@pytest.mark.parametrize("what", ["fifo-weights", "fifo-weights-named-by-format", "fifo-checkpoint-index",
                                  "fifo-checkpoint-data", "directory-weights", "device-weights", "fifo-run-input",
                                  "fifo-run-weights"])
def test_an_input_that_is_not_a_regular_file_is_named_as_what_it_is(what, folder):
    args = _odd_input(folder, what)
    refused_untouched(folder, *args, parts=[_KIND[what.split("-")[0]]])


# ---------------------------------------------------------------------------------------
# Outputs replace only regular files


@pytest.mark.parametrize("what", ["to-directory", "json-directory", "output-fifo", "to-symlink", "to-device"])
def test_an_output_that_is_not_a_regular_file_is_not_replaced_even_with_force(what, folder):
    port = ["port", R18.name, "--from", "in.safetensors", "--force"]
    if what == "to-directory":
        (folder / "d").mkdir()
        (folder / "d" / "keep").write_text("keep")
        args, part = [*port, "--to", "d", "--to-format", "torch"], "d: is a directory"
    elif what == "json-directory":
        (folder / "r.json").mkdir()
        args, part = [*port, "--to", "o.safetensors", "--json", "r.json"], "r.json: is a directory"
    elif what == "output-fifo":
        os.mkfifo(folder / "o.npz")
        args = ["run", R18.name, "--weights", "in.safetensors", "--framework", "torch", "--input", "x.npy",
                "--output", "o.npz", "--force"]
        part = "o.npz: is a FIFO"
    elif what == "to-symlink":
        (folder / "other.pt").write_bytes(b"someone's")
        os.symlink("other.pt", folder / "link.pt")
        args, part = [*port, "--to", "link.pt"], "link.pt: is a symbolic link"
    else:
        args, part = [*port, "--to", "/dev/full", "--to-format", "torch"], "/dev/full: is a character device"
    refused_untouched(folder, *args, parts=[part, "equiv replaces only regular files"])


# ---------------------------------------------------------------------------------------
# OS errors: one line naming the path. Tests run as root here, which writes anywhere, so a
# read-only folder is tried from a child that drops to `nobody` (after importing, since the
# interpreter lives under /root), and a full disk is played by RLIMIT_FSIZE (EFBIG, "File too
# large"), which fails the same writes with a real OS error: no tmpfs of a few KB can be
# mounted here.

_AS_NOBODY = ("import locale, os, sys\n"
              "import safetensors.numpy, equiv.porting, equiv.report, equiv.quiet, equiv.inputs\n"
              "from equiv.cli import build_parser, main\n"
              "build_parser()\n"
              "os.setgid(65534); os.setuid(65534)\n"
              "sys.exit(main(sys.argv[1:]))\n")
_FILE_LIMIT = ("import resource, signal, sys\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
               "from equiv.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")


@pytest.fixture
def shared_folder(weights_file):
    """A folder `nobody` can enter (pytest's tmp_path is root's alone), with a read-only and a
    writable sub-folder."""
    top = Path(tempfile.mkdtemp(prefix="equiv-nobody-"))
    try:
        top.chmod(0o755)
        shutil.copyfile(weights_file, top / "in.safetensors")
        (top / "in.safetensors").chmod(0o644)
        (top / "open").mkdir(mode=0o777)
        (top / "open").chmod(0o777)
        (top / "locked").mkdir()
        (top / "locked").chmod(0o555)
        yield top
    finally:
        shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to nobody, which needs root")
@pytest.mark.parametrize("where", ["json", "to", "to-new-subfolder"])
def test_a_read_only_folder_is_refused_before_anything_is_written(where, shared_folder):
    outs, named = {"json": (["--to", "open/o.safetensors", "--json", "locked/r.json"], "locked/r.json"),
                   "to": (["--to", "locked/o.safetensors", "--json", "open/r.json"], "locked/o.safetensors"),
                   "to-new-subfolder": (["--to", "locked/sub/o.safetensors"], "locked/sub/o.safetensors")}[where]
    refused_untouched(shared_folder, "port", R18.name, "--from", "in.safetensors", *outs, wrapper=_AS_NOBODY,
                      parts=[f"equiv: error: {named}: cannot be written in ", "Permission denied"])


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to nobody, which needs root")
@pytest.mark.parametrize("name", ["in.safetensors", "in.pt"])
def test_an_unreadable_input_is_one_line_naming_it(name, shared_folder):
    os.rename(shared_folder / "in.safetensors", shared_folder / name)
    (shared_folder / name).chmod(0o000)
    refused_untouched(shared_folder, "port", R18.name, "--from", name, "--from-format", "safetensors",
                      "--to", "open/o.pt", "-q", wrapper=_AS_NOBODY,
                      parts=[f"equiv: error: {name}: Permission denied"])


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_a_write_that_fails_on_the_disk_is_one_line_and_leaves_nothing(fmt, folder):
    refused_untouched(folder, "port", R18.name, "--from", "in.safetensors", "--to", f"o.{fmt}", "-q",
                      wrapper=_FILE_LIMIT, parts=[f"o.{fmt}: cannot be written", "File too large"
                                                  if fmt == "safetensors" else "RuntimeError"])


def test_a_report_write_that_fails_on_the_disk_names_the_report(folder):
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
            "from equiv import report\nfrom equiv.errors import EquivError\n"
            "try:\n    report.write_atomic('r.json', 'x' * 200_000)\n"
            "except EquivError as e:\n    print(e)\n")
    before = snapshot(folder)
    r = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=TIMEOUT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.stdout.strip() == "r.json: cannot be written: File too large", r.stdout + r.stderr
    assert snapshot(folder) == before


# ---------------------------------------------------------------------------------------
# .npy inputs: refused from the header, before the data is read


def _npy_header(path: Path, shape, descr="<f4", data: bytes = b"", apparent: int | None = None) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        f.write(data)
        if apparent is not None:
            f.truncate(f.tell() + apparent)  # sparse: no block of it is on the disk


@pytest.mark.parametrize("case,part", [
    ("empty", "not a readable .npy array"),
    ("petabytes", f"its header declares shape (1000000, 10000, 10000, 3) ({10**6 * 10**4 * 10**4 * 3 * 4:,} bytes)"),
    ("int64", "holds int64 values; equiv runs float32 inputs"),
    ("short", "but the file holds 72 bytes of data"),
    ("three-dims", "input must be NHWC with 3 channels"),
])
def test_a_hostile_npy_input_is_refused_from_its_header(case, part, folder):
    path = folder / "bad.npy"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "petabytes":
        _npy_header(path, (10**6, 10**4, 10**4, 3))
    elif case == "int64":
        np.save(path, np.zeros((1, 32, 32, 3), np.int64))
    elif case == "short":
        np.save(path, np.zeros((1, 32, 32, 3), np.float32))
        with open(path, "r+b") as f:
            f.truncate(200)
    else:
        np.save(path, np.zeros((32, 32, 3), np.float32))
    refused_untouched(folder, "run", R18.name, "--weights", "in.safetensors", "--framework", "torch",
                      "--input", "bad.npy", "--output", "o.npz", parts=["bad.npy: ", part])


# Runs its arguments as a grandchild and prints that one's peak memory and exit code. A child
# forked by pytest itself would report pytest's own peak (Linux keeps a process's high-water mark
# across fork and exec); forked by this small launcher, it reports its own.
_PEAK_OF = ("import os, sys\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
            "_, status, usage = os.wait4(pid, 0)\n"
            "print(usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status))\n")


def test_a_sparse_npy_input_declaring_12_gb_is_refused_without_reading_it(folder):
    """The data would need 12 GB: the refusal reads the header only (the command's own peak)."""
    _npy_header(folder / "big.npy", (20000, 224, 224, 3), apparent=20000 * 224 * 224 * 3 * 4)
    r = subprocess.run([sys.executable, "-c", _PEAK_OF, "-m", "equiv.cli", "run", R18.name, "--weights",
                        "in.safetensors", "--framework", "torch", "--input", "big.npy", "--output", "o.npz"],
                       cwd=folder, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    peak, code = (int(n) for n in r.stdout.split()[-2:])
    assert code == 2 and "big.npy: " in r.stderr, r.stderr
    assert peak < 1e9, f"peak {peak / 1e9:.2f} GB"
    assert not (folder / "o.npz").exists()


def test_a_fortran_order_npy_input_reads_as_numpy_reads_it(folder):
    from equiv.inputs import read_npy

    x = np.asfortranarray(W.random_input(R18, 2, 9, 7))
    np.save(folder / "f.npy", x)
    got = read_npy(folder / "f.npy", R18, "torch")
    assert got.dtype == np.float32 and got.flags.c_contiguous and np.array_equal(got, np.load(folder / "f.npy"))


# ---------------------------------------------------------------------------------------
# Options are checked before anything is written


@pytest.mark.parametrize("args,part", [
    (["--seed", "-1"], "argument --seed: must be a non-negative integer: -1"),
    (["--verify", "--input-size", "5000", "32"], "too large"),
])
def test_port_options_are_refused_before_the_weights_are_written(args, part, folder):
    r = equiv(folder, "port", R18.name, "--from", "in.safetensors", "--to", "o.pt", *args)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and part in r.stderr, r.stderr
    assert not (folder / "o.pt").exists()


def test_the_api_refuses_a_negative_seed_before_writing(folder):
    from equiv.porting import port

    with pytest.raises(EquivError, match="`seed=-1` must be a non-negative integer"):
        port(R18, folder / "in.safetensors", folder / "o.pt", verify=True, seed=-1)
    assert not (folder / "o.pt").exists()


# ---------------------------------------------------------------------------------------
# Pickles that call functions acting on the system: refused even with --allow-pickle


class _System:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Subprocess(_System):
    def __reduce__(self):
        return subprocess.call, (["touch", self.marker],)


@pytest.mark.parametrize("payload", ["os.system", "os.system-after-a-module", "subprocess.call"])
@pytest.mark.parametrize("allow", [False, True])
def test_a_pickle_calling_os_functions_is_refused_as_such_even_with_allow_pickle(payload, allow, tmp_path):
    import torch

    marker = tmp_path / "ran"
    obj = {"os.system": lambda: {"w": _System(marker)},
           # weights_only stops at the module, so only the opted-in unpickler meets os.system
           "os.system-after-a-module": lambda: {"m": torch.nn.Linear(1, 1), "w": _System(marker)},
           "subprocess.call": lambda: {"w": _Subprocess(marker)}}[payload]()
    torch.save(obj, tmp_path / "evil.pt")
    refused_by_weights_only = payload == "os.system" or not allow
    with pytest.warns(UserWarning) if not refused_by_weights_only else contextlib.nullcontext():
        with pytest.raises(UnsafeFileError) as e:
            files.read(tmp_path / "evil.pt", R18, allow_pickle=allow)
    if payload == "os.system" or allow:
        name = "subprocess.call" if payload == "subprocess.call" else "posix.system"
        assert f"a pickle calling {name}, a function equiv refuses even with `allow_pickle=True`" in str(e.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# stderr: equiv's lines only, unless asked


def _env_without_tf_level() -> dict:
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def test_a_check_through_tensorflow_prints_nothing_on_stderr_with_q_and_the_frameworks_with_v(tmp_path):
    args = ["check", R18.name, "--frameworks", "slim,torch", "--input-size", "32", "32", "--batch", "1", "-q"]
    r = equiv(tmp_path, *args, env=_env_without_tf_level())
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    r = equiv(tmp_path, *args, "-v", env=_env_without_tf_level())
    assert r.returncode == 0 and r.stderr.strip(), "with -v TensorFlow's own lines show"


def test_a_trusted_pickle_port_says_one_warning_line_with_q(folder):
    import torch

    from equiv.frameworks import adapter

    ad = adapter("torch")
    model = ad.build(R18)
    ad.load_params(R18, model, W.random_params(R18, 0))
    torch.save(model, folder / "whole.pt")
    r = equiv(folder, "port", R18.name, "--from", "whole.pt", "--to", "o.safetensors", "--allow-pickle", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.splitlines() == ["equiv: warning: whole.pt: unpickled as asked (--allow-pickle, "
                                     "allow_pickle=True): this file is trusted to run code in this process"]
