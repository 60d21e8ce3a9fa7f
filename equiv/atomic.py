"""Atomic outputs: nothing equiv writes is ever seen half-written, and nothing is replaced unasked.

Every output is written into a staging folder beside its target (the same file system, so the
final rename is atomic), flushed to disk with fsync, and only then renamed into place; the
folder's entry is fsynced after. A process killed at any moment, SIGKILL included, leaves the
target as it was (or absent), never partial. Without `force` the target is published with a
hard link, which fails rather than replace a file that appeared meanwhile.

What a killed process can leave behind is its staging folder, `.NAME.equiv-tmp-HOST-PID-XXXX`
(hidden, never mistaken for an output). The next write to the same target removes those of
processes of this host that no longer run.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from equiv.errors import EquivError
from equiv.paths import refuse_existing

STAGING = ".equiv-tmp-"


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _prefix(target: Path) -> str:
    return f".{target.name}{STAGING}{_host()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clean_stale(target: Path) -> list[Path]:
    """Remove staging folders left beside `target` by killed processes of this host."""
    prefix = _prefix(target)
    removed = []
    for p in target.parent.glob(glob.escape(prefix) + "*"):
        try:
            pid = int(p.name[len(prefix):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextmanager
def staging(target: str | os.PathLike) -> Iterator[Path]:
    """A fresh folder beside `target` to write into; removed with whatever is left in it.

    An OS error while writing (a full disk, a file too large, no permission) is an EquivError
    that names `target`, not the staged file: the user never asked for that one."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        clean_stale(target)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_prefix(target)}{os.getpid()}-", dir=folder))
    except OSError as e:
        raise EquivError(f"{target}: cannot be written in {folder}: {e.strerror or e}") from None
    try:
        yield tmp
    except OSError as e:
        raise EquivError(f"{target}: cannot be written: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def writing_behind(folder: Path, every: float = 0.05) -> Iterator[None]:
    """While the body writes files into the staging `folder`, start the kernel's writeback of what
    they hold so far, every `every` seconds (posix_fadvise DONTNEED: asynchronous, it waits for
    nothing), so that the fsync before publishing waits for the tail only, not for the whole file
    (a 550 MB torch file: the fsync was 0.3 s of a 3 s port). Nothing where the OS has no fadvise."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        yield
        return
    import threading

    stop = threading.Event()

    def kick() -> None:
        while not stop.wait(every):
            for p in list(folder.iterdir()) if folder.is_dir() else []:
                try:
                    fd = os.open(p, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                except OSError:
                    pass
                finally:
                    os.close(fd)

    worker = threading.Thread(target=kick, name="equiv-write-behind", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems cannot fsync a folder
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def _link(staged: Path, target: Path) -> bool:
    """Publish without replacing: False where the file system has no hard links."""
    try:
        os.link(staged, target)
    except FileExistsError:
        raise EquivError(f"{target} exists; pass `force=True` to replace it") from None
    except OSError:
        return False
    staged.unlink()
    return True


def publish(pairs: Sequence[tuple[Path, Path]], force: bool) -> list[Path]:
    """Move complete staged files onto their targets.

    Several files (a TF checkpoint's data and index) cannot be replaced in one step, so the
    last one, the entry a reader opens first (the index), is removed before the others are
    replaced and put back last: a process killed in between leaves no checkpoint (an index is
    missing), never the old index over new data."""
    targets = [t for _, t in pairs]
    refuse_existing(targets, force)
    for staged, _ in pairs:
        _fsync(staged)
    if force and len(pairs) > 1:
        targets[-1].unlink(missing_ok=True)
    done: list[Path] = []
    try:
        for staged, target in pairs:
            if force or not _link(staged, target):
                refuse_existing([target], force)
                os.replace(staged, target)
            done.append(target)
    except EquivError:
        for t in done:  # a file appeared under one of our names meanwhile: take back the others
            t.unlink(missing_ok=True)
        raise
    for folder in {t.parent for t in targets}:
        _fsync(folder if str(folder) else Path("."))
    return targets


def write_bytes(path: str | os.PathLike, data: str | bytes, *, force: bool = False) -> Path:
    """Write `data` (text as UTF-8) to `path` atomically; an existing file only with `force`."""
    path = Path(path)
    refuse_existing([path], force)
    with staging(path) as tmp:
        staged = tmp / path.name
        staged.write_bytes(data.encode() if isinstance(data, str) else data)
        publish([(staged, path)], force)
    return path
