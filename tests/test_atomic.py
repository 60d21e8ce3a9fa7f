"""Atomic outputs: every file equiv writes is staged beside its target, fsynced and renamed;
an existing file is replaced only with --force; a port killed with SIGKILL at any moment
leaves the old file byte for byte, or the new one complete, never a partial one."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from equiv import atomic, files
from equiv import canonical as C
from equiv import variants as V
from equiv.cli import main
from equiv.errors import EquivError
from tests.fuzzing import TINY, tiny_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_allocator_setting(monkeypatch):
    """`main` asks TensorFlow for the system allocator; keep that out of the rest of the session."""
    monkeypatch.delenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", raising=False)  # restored (or removed) afterwards


def _staging(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if atomic.STAGING in p.name)


def test_write_refuses_an_existing_file_without_force_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "r.json"
    atomic.write_bytes(target, "one\n")
    with pytest.raises(EquivError, match="r.json exists; pass `force=True`"):
        atomic.write_bytes(target, "two\n")
    assert target.read_text() == "one\n"
    atomic.write_bytes(target, b"three\n", force=True)
    assert target.read_text() == "three\n" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_a_file_that_appears_meanwhile_is_not_replaced_without_force(tmp_path):
    target = tmp_path / "w.bin"
    with atomic.staging(target) as tmp:
        staged = tmp / "w.bin"
        staged.write_bytes(b"ours")
        target.write_bytes(b"someone else's")  # created after the first check
        with pytest.raises(EquivError, match="exists"):
            atomic.publish([(staged, target)], force=False)
    assert target.read_bytes() == b"someone else's" and _staging(tmp_path) == []


def test_a_checkpoint_interrupted_between_its_files_is_absent_never_old_index_over_new_data(tmp_path, monkeypatch):
    prefix = tmp_path / "w.ckpt"
    files.write(tiny_params(0), prefix, TINY)
    replace = os.replace

    def die_after_the_data(src, dst):  # a process killed between its two renames
        replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", die_after_the_data)
    with pytest.raises(KeyboardInterrupt):
        files.write(tiny_params(1), prefix, TINY, force=True)
    monkeypatch.undo()
    assert not Path(f"{prefix}.index").exists()
    with pytest.raises(EquivError, match="no TF checkpoint here"):
        files.read(prefix, TINY)
    files.write(tiny_params(1), prefix, TINY, force=True)
    got = files.read(prefix, TINY)
    assert all(np.array_equal(got[k], a) for k, a in tiny_params(1).items())


def test_staging_folders_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "out.safetensors"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = atomic._host()
    stale = tmp_path / f".out.safetensors{atomic.STAGING}{host}-{dead.pid}-abc"
    alive = tmp_path / f".out.safetensors{atomic.STAGING}{host}-{os.getppid()}-def"
    other_host = tmp_path / f".out.safetensors{atomic.STAGING}00000000-{dead.pid}-ghi"
    for d in (stale, alive, other_host):
        d.mkdir()
        (d / "out.safetensors").write_bytes(b"partial")
    files.write(tiny_params(0), target, TINY)
    assert _staging(tmp_path) == sorted([alive.name, other_host.name])
    assert files.read(target, TINY).keys() == C.param_shapes(TINY).keys()


def test_cli_reports_are_refused_before_any_work_without_force(tmp_path, capsys):
    report = tmp_path / "r.json"
    report.write_text("keep me")
    args = ["check", "torchvision/resnet18", "--frameworks", "torch,keras", "--input-size", "32", "32", "--batch", "1",
            "-q", "--json", str(report)]
    assert main(args) == 2
    assert "r.json exists; pass --force" in capsys.readouterr().err and report.read_text() == "keep me"
    assert main([*args, "--force"]) == 0 and '"equivalent": true' in report.read_text()


# ---------------------------------------------------------------------------------------
# SIGKILL: a real `equiv port --force` over an existing file, killed mid-write


SUFFIX = {"safetensors": ".safetensors", "torch": ".pt", "tf-checkpoint": ".ckpt"}


def _parts(target: Path) -> list[Path]:
    """The files of a weight file (a TF checkpoint: its data, then its index)."""
    if target.suffix != ".ckpt":
        return [target]
    return sorted(target.parent.glob(target.name + ".data-*")) + [Path(f"{target}.index")]


def _digest(target: Path) -> str | None:
    """The bytes of a weight file; None when there is none (for a TF checkpoint: no index)."""
    if not _parts(target)[-1].exists():
        return None
    h = hashlib.sha256()
    for part in _parts(target):
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _random_params(v, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in C.param_shapes(v).items()}


def _port(v, src: Path, target: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "equiv.cli", "port", v.name, "--from", str(src), "--to",
                             str(target), "--force"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _kill_when(proc: subprocess.Popen, target: Path, moment: str) -> str:
    """SIGKILL `proc` at `moment`; returns what was on disk then ("partial" when a staged file
    was seen growing: the kill certainly fell inside the write)."""
    for line in proc.stderr:  # progress lines: "[equiv] reading ...", "[equiv] writing ..."
        if "writing" in line:
            break
    seen = "writing"
    if moment == "mid-write":
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            staged = [p for d in target.parent.glob(f".{target.name}{atomic.STAGING}*") for p in d.glob("*")]
            if any(p.stat().st_size > 0 for p in staged if p.exists()):
                seen = "partial"
                break
    else:
        time.sleep(float(moment))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return seen


def _kill_during_ports(v, tmp_path: Path, moments: list[str], fmt: str = "safetensors") -> list[tuple[str, str, str]]:
    """Port over an existing `fmt` file, killed at each moment: the old file byte for byte, or
    the new one complete (read back equal to the source), never anything else."""
    new_params = _random_params(v, 1)
    src = files.write(new_params, tmp_path / "src.safetensors", v)[0]
    old_dir = tmp_path / "old"
    old = files.write(_random_params(v, 2), old_dir / f"target{SUFFIX[fmt]}", v)
    target = tmp_path / "out" / f"target{SUFFIX[fmt]}"
    target.parent.mkdir()
    old_digest = _digest(old_dir / target.name)

    def state() -> str:
        digest = _digest(target)
        if digest in (old_digest, None):
            return "old" if digest else "absent"
        try:
            got = files.read(target, v)
        except EquivError:
            return "PARTIAL"
        return "new" if all(np.array_equal(got[k], a) for k, a in new_params.items()) else "PARTIAL"

    outcomes = []
    for moment in moments:
        for p in target.parent.glob(target.name + "*"):
            p.unlink()
        for p in old:
            (target.parent / p.name).write_bytes(p.read_bytes())
        seen = _kill_when(_port(v, src, target), target, moment)
        outcomes.append((moment, seen, state()))
    # A TF checkpoint is two files: between them it is absent (its index goes first), never mixed.
    allowed = ("old", "new", "absent") if fmt == "tf-checkpoint" else ("old", "new")
    assert all(found in allowed for _, _, found in outcomes), outcomes
    assert any(seen == "partial" and found == "old" for _, seen, found in outcomes), outcomes
    # what the killed processes left: staging folders only, which the next port removes
    assert all(atomic.STAGING in p.name or p in _parts(target) for p in target.parent.iterdir())
    assert _port(v, src, target).wait() == 0
    assert state() == "new" and sorted(target.parent.iterdir()) == sorted(_parts(target))
    return outcomes


def test_a_port_killed_mid_write_leaves_the_old_file_or_the_new_one(tmp_path):
    _kill_during_ports(V.get("torchvision/resnet50"), tmp_path, ["mid-write", "mid-write", "0", "0.05"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_a_port_of_resnet152_killed_at_many_moments(fmt, tmp_path):
    moments = ["mid-write"] * 3 + ["0", "0.05", "0.1", "0.2", "0.3", "0.5", "1", "2", "3", "6", "12"]
    outcomes = _kill_during_ports(V.get("torchvision/resnet152"), tmp_path, moments, fmt)
    print(fmt, outcomes)
