"""Path policy: every path equiv reads or writes is what it should be, checked before any work.

- An input is a readable regular file (a TF checkpoint: its `.index` and every `.data-*` file).
  A FIFO, a device, a socket or a folder is refused by what it is, from `os.stat`, before it is
  opened, so a FIFO cannot hang the reader.
- An output replaces only a regular file (a symbolic link is refused rather than replaced by
  a file, which would leave what it points to as it was), in a folder equiv can write: tried
  by creating and removing a file there, since `os.access` says yes to root on a read-only
  folder.
- No output is an input or another output, however it is named: paths are compared resolved
  (`os.path.realpath`) and, for files that exist, by device and inode (hard links).

Every refusal is an EquivError whose message starts with the path.
"""

from __future__ import annotations

import glob
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from equiv.errors import EquivError

# (the flag or role that names the path, the path, its format if known)
Named = tuple[str, "str | os.PathLike", "str | None"]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))
TF_DATA = ".data-00000-of-00001"  # the one shard tf.compat.v1.train.Saver writes


def kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def tf_prefix(path: Path) -> Path:
    """A TF checkpoint's prefix, given the prefix itself or its `.index` file."""
    return path.with_suffix("") if path.suffix == ".index" else path


def _is_checkpoint(path: Path, fmt: str | None) -> bool:
    """As equiv.files.detect tells a TF checkpoint: by the format, the name, or a prefix's index
    (without opening anything: this runs before the path is known to be a regular file)."""
    from equiv import formats

    if fmt is not None:
        return fmt == "tf-checkpoint"
    return formats.by_name(path) == "tf-checkpoint" or (not os.path.lexists(path)
                                                         and os.path.lexists(f"{path}.index"))


def input_files(path: str | os.PathLike, fmt: str | None = None) -> list[Path]:
    """The files reading `path` opens: itself, or a TF checkpoint's index and data files."""
    path = Path(path)
    if not _is_checkpoint(path, fmt):
        return [path]
    prefix = tf_prefix(path)
    return [Path(f"{prefix}.index")] + sorted(Path(p) for p in glob.glob(glob.escape(str(prefix)) + ".data-*"))


def output_files(path: str | os.PathLike, fmt: str | None = None) -> list[Path]:
    """The files writing `path` in `fmt` creates or replaces."""
    path = Path(path)
    if fmt != "tf-checkpoint":
        return [path]
    prefix = tf_prefix(path)
    return [Path(f"{prefix}.index"), Path(f"{prefix}{TF_DATA}")]


def check_input(path: str | os.PathLike, fmt: str | None = None) -> list[Path]:
    """Each file that reading `path` opens, refused unless it is an existing regular file."""
    found = input_files(path, fmt)
    for p in found:
        try:
            st = os.stat(p)  # follows links: what a reader would open
        except FileNotFoundError:
            if os.path.islink(p):
                raise EquivError(f"{p}: a symbolic link to a file that does not exist") from None
            if p != Path(path):
                raise EquivError(f"{path}: no TF checkpoint here (expected {p})") from None
            raise EquivError(f"{p}: no such file") from None
        except OSError as e:
            raise EquivError(f"{p}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise EquivError(f"{p}: is {kind(st.st_mode)}, not a regular file")
        try:  # readable, said plainly (some readers report EACCES as "no such file"); never blocks
            os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK))
        except OSError as e:
            raise EquivError(f"{p}: {e.strerror}") from None
    return found


def refuse_existing(targets: Sequence[str | os.PathLike], force: bool) -> None:
    """An existing target must be a regular file, and is replaced only with `force`."""
    for t in targets:
        try:
            mode = os.lstat(t).st_mode
        except FileNotFoundError:
            continue
        except OSError as e:
            raise EquivError(f"{t}: {e.strerror}") from None
        if not stat.S_ISREG(mode):
            raise EquivError(f"{t}: is {kind(mode)}, not a regular file: equiv replaces only regular files")
        if not force:
            raise EquivError(f"{t} exists; pass `force=True` to replace it")


def check_folder(target: str | os.PathLike) -> None:
    """The folder `target` goes in (or its nearest existing ancestor, where equiv would create
    it) must be a folder equiv can write in: tried, not guessed from permission bits."""
    folder = Path(os.path.abspath(target)).parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise EquivError(f"{target}: cannot be written: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".equiv-probe-", dir=folder)
    except OSError as e:
        raise EquivError(f"{target}: cannot be written in {folder}: {e.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    try:
        st = os.stat(path)
        inode = (st.st_dev, st.st_ino)
    except OSError:
        inode = None
    return os.path.realpath(path), inode


def _same(a: Path, b: Path) -> bool:
    (ra, ia), (rb, ib) = _identity(a), _identity(b)
    return ra == rb or (ia is not None and ia == ib)


def check_distinct(inputs: Sequence[Named], outputs: Sequence[Named]) -> None:
    """No output file is an input file or another output's file, under any name."""
    ins = [(flag, f) for flag, p, fmt in inputs for f in input_files(p, fmt)]
    outs = [(flag, f) for flag, p, fmt in outputs for f in output_files(p, fmt)]
    for i, (flag, f) in enumerate(outs):
        for other_flag, g in ins:
            if _same(f, g):
                raise EquivError(f"{f}: {flag} would overwrite the input {other_flag} {g}")
        for other_flag, g in outs[:i]:
            if _same(f, g):
                raise EquivError(f"{f}: {flag} and {other_flag} name the same file")


def check_job(inputs: Sequence[Named] = (), outputs: Sequence[Named] = (), *, force: bool = False) -> None:
    """All of the policy for one job, before any work: inputs, aliases, then each output."""
    for _, p, fmt in inputs:
        check_input(p, fmt)
    check_distinct(inputs, outputs)
    for _, p, fmt in outputs:
        files = output_files(p, fmt)
        refuse_existing(files, force)
        check_folder(files[0])
