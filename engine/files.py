"""The file-type and containment rules for every input file a cohort format reads.

Images (`engine.images`), report files, tables and XML documents all go through here, so one
rule holds everywhere:

* **Containment.** A file a format finds under the cohort root must resolve inside that root;
  a symbolic link leading out of it (to ``/etc/passwd``, say) is refused and never opened.
* **Regular files only.** A FIFO, a device (``/dev/zero``), a socket or a folder is refused.
  Files are opened non-blocking and checked on the open descriptor, so a FIFO swapped in after
  the check still cannot make a reader wait forever.
* **Size caps.** A per-item text file (a report, an XML document) larger than
  `MAX_REPORT_BYTES` is refused rather than read into memory.

It also holds the one rule for files the engine writes (`replacing`): written under a
temporary name and renamed into place; a failed write (a full disk) removes the temporary and
says which file and why.

Standard library only: the dashboard and every adapter may import it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from engine.errors import EngineError

# A radiology report is a few kilobytes; the largest real MIMIC-CXR report is under 20 KB.
MAX_REPORT_BYTES = 1 << 20  # 1 MiB

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class InputFileError(EngineError):
    """An input file refused by a rule of this module (it was not read).

    Attributes:
        reason: ``outside_root``, ``not_regular`` or ``too_large``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def file_kind(mode: int) -> str:
    """What a file of stat mode `mode` is, in words (``a FIFO (named pipe)``, ...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def contained(root: str | Path, path: str | Path, *, what: str = "file") -> Path:
    """`path` with symbolic links resolved, refused unless it lies inside the folder `root`.

    Raises:
        InputFileError: (``outside_root``) the resolved path leaves `root`.
    """
    base = Path(os.path.realpath(root))
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(base):
        raise InputFileError(
            f"{what} {path} resolves outside the cohort root {base} (to {resolved}); "
            "it was not read", "outside_root")
    return resolved


def open_regular(path: str | Path, *, what: str = "file",
                 max_bytes: int | None = None) -> BinaryIO:
    """Open `path` for binary reading, refusing anything but a regular file.

    The open itself cannot block (``O_NONBLOCK``, which a FIFO would otherwise need a writer
    for); the type and size are checked on the open descriptor.

    Raises:
        FileNotFoundError / OSError: as `open` does.
        InputFileError: (``not_regular``) not a regular file; (``too_large``) over `max_bytes`.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(
                f"{what} {path} is {file_kind(info.st_mode)}, not a regular file; it was not "
                "read", "not_regular")
        if max_bytes is not None and info.st_size > max_bytes:
            raise InputFileError(
                f"{what} {path} is {info.st_size:,} bytes, over the limit of {max_bytes:,}; it "
                "was not read", "too_large")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, *, what: str = "file",
                 max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (see `open_regular`), at most `max_bytes` of them.

    A file that grows past `max_bytes` while it is read is refused as well.
    """
    with open_regular(path, what=what, max_bytes=max_bytes) as handle:
        if max_bytes is None:
            return handle.read()
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputFileError(
            f"{what} {path} is over the limit of {max_bytes:,} bytes; it was not read",
            "too_large")
    return data


def check_input_file(root: str | Path, path: str | Path, *, what: str = "file") -> Path:
    """`contained` then a regular-file check (by stat; nothing is opened). Returns `path`."""
    contained(root, path, what=what)
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise InputFileError(
            f"{what} {path} is {file_kind(mode)}, not a regular file; it was not read",
            "not_regular")
    return Path(path)


# Free space under which a failed write is put down to a full disk.
_FULL_DISK_BYTES = 16 << 20


def write_failure(path: str | Path, exc: BaseException) -> OSError | None:
    """One OSError naming `path` and the cause of a failed write, or None when `exc` is not
    one (a bug in the writer is left to surface as itself).

    An OSError is a write failure; so is any error while the target's disk is (nearly) full,
    since some writers (torch.save) report a full disk as a bare RuntimeError.
    """
    path = Path(path)
    try:
        folder = next(p for p in (path.parent, *path.parents) if p.exists())
        free = shutil.disk_usage(folder).free
    except (OSError, StopIteration):
        free = None
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or \
        (free is not None and free < _FULL_DISK_BYTES)
    if full:
        where = f", {free:,} bytes free" if free is not None else ""
        return OSError(errno.ENOSPC, f"cannot write: no space left on the device{where}; the "
                                     "partial file was removed", str(path))
    if isinstance(exc, OSError):
        cause = exc.strerror or str(exc) or type(exc).__name__
        return OSError(exc.errno or errno.EIO,
                       f"cannot write ({cause}); the partial file was removed", str(path))
    return None


@contextlib.contextmanager
def replacing(path: str | Path, *, tmp: str | Path | None = None) -> Iterator[Path]:
    """Write `path` atomically: yields a temporary path to write, renamed onto `path` after.

    On any failure the temporary file (or folder) is removed; a write failure (`write_failure`)
    is raised as one OSError naming `path`, anything else propagates unchanged.
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                tmp.unlink()
        failure = write_failure(path, exc) if isinstance(exc, Exception) else None
        if failure is not None:
            raise failure from None
        raise
