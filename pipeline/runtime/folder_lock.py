"""Exclusive locks that keep two seqfer runs from writing into one output folder or one output file at once.

A lock is ``fcntl.flock`` on a descriptor this process keeps open until it releases the lock or ends; the kernel
drops it when the process dies, however it dies (``kill -9`` included), so a killed run never leaves anything
locked and no stale lock has to be cleaned. A folder is locked through a descriptor of the folder itself (nothing
is written into it); one output file through a small hidden lock file beside it, removed on release. Locks are
re-entrant per process: taking one this process holds succeeds (a verb may claim its folder again; tests run a
verb twice in one process). A folder deleted and made again is a new folder, locked anew.

Another process's lock is a :class:`~stages.errors.StageError` naming the path and, where Linux's ``/proc/locks``
tells, the other run's pid. Where the file system cannot lock (some network mounts) a warning says so and the run
goes on unprotected.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from stages.errors import StageError

try:
    import fcntl
except ImportError:  # not POSIX: no locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_CANNOT_LOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL, errno.EBADF}


@dataclass
class _Lock:
    fd: int
    dev: int
    ino: int
    lock_file: Path | None  # a lock file of ours, removed on release (None: the folder's own descriptor)
    holds: int = 1


_held: dict[str, _Lock] = {}


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _same_file(lock: _Lock, path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (lock.dev, lock.ino)


def holder_pid(dev: int, ino: int) -> int | None:
    """The pid holding a ``flock`` on the file (``dev``, ``ino``), from Linux's ``/proc/locks``; None when the
    system does not say."""
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2172777 0 EOF" (blocked waiters read "1: -> FLOCK ...")
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want and fields[4].isdigit():
            pid = int(fields[4])
            return pid if pid > 0 else None
    return None


def _busy(what: str, path: Path, fd: int) -> StageError:
    st = os.fstat(fd)
    pid = holder_pid(st.st_dev, st.st_ino)
    who = f"another seqfer run (pid {pid})" if pid is not None else "another seqfer run"
    return StageError(f"{path}: {who} is writing {what}; wait for it to finish, or choose another output location")


def _try_lock(fd: int, path: Path, what: str) -> bool:
    """flock ``fd`` exclusively without waiting: True when locked; False (with a warning) where the file system
    cannot lock; :class:`StageError` when another process holds it. Closes ``fd`` unless it returns True."""
    if fcntl is None:
        os.close(fd)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        error = _busy(what, path, fd)
        os.close(fd)
        raise error from None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _CANNOT_LOCK:
            raise
        log.warning(f"{path}: this file system cannot lock ({exc.strerror}); a second run could write here too")
        return False


def _open_folder(folder: Path) -> int:
    """A descriptor of the folder itself (not inherited by programs this process starts)."""
    return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))


def lock_folder(folder: Path | str) -> None:
    """Hold ``folder`` (which must exist) for this process until :func:`release` or its end; a
    :class:`StageError` at once when another process holds it."""
    folder = Path(folder)
    if _current(folder) is not None:
        return
    try:
        fd = _open_folder(folder)
    except OSError as exc:
        log.warning(f"{folder}: cannot lock this folder ({exc.strerror}); a second run could write here too")
        return
    if _try_lock(fd, folder, "into this folder"):
        st = os.fstat(fd)
        _held[_key(folder)] = _Lock(fd, st.st_dev, st.st_ino, None)


def folder_in_use(folder: Path | str) -> StageError | None:
    """The error :func:`lock_folder` would raise because another process holds ``folder``, without taking it
    (a check before a verb's work starts); None when it is free, absent, held by this process or cannot be
    checked."""
    folder = Path(folder)
    if fcntl is None or _current(folder) is not None:
        return None
    try:
        fd = _open_folder(folder)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: two checks never collide
    except BlockingIOError:
        return _busy("into this folder", folder, fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the shared lock
    return None


def _current(path: Path) -> _Lock | None:
    """This process's lock on ``path`` when it still guards the file now at ``path``; a stale one (the folder
    was deleted or replaced) is dropped."""
    key = _key(path)
    lock = _held.get(key)
    if lock is None:
        return None
    if lock.lock_file is None and _same_file(lock, path):
        return lock
    if lock.lock_file is not None and _same_file(lock, lock.lock_file):
        return lock
    del _held[key]
    os.close(lock.fd)
    return None


def release(path: Path | str) -> None:
    """Give up this process's lock on ``path`` (a folder, or a file held with :func:`hold_output`); a file's
    lock file is removed. Nothing when it is not held."""
    lock = _held.pop(_key(Path(path)), None)
    if lock is None:
        return
    if lock.lock_file is not None and _same_file(lock, lock.lock_file):
        lock.lock_file.unlink(missing_ok=True)  # still locked while it goes: no one can take it half-removed
    os.close(lock.fd)


def release_all() -> None:
    """Give up every lock this process holds: the end of one CLI command (a process that runs several, such as a
    test session or a notebook, must not keep the folders of a finished command locked)."""
    for key in list(_held):
        release(Path(key))


def output_lock_file(path: Path) -> Path:
    """The hidden lock file of one output file: a short name (``.seqfer-lock-<hash>``, whatever the length of
    the output's name) beside it."""
    digest = hashlib.sha256(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return path.parent / f".seqfer-lock-{digest}"


class OutputHold:
    """This process's hold on one output file (see :func:`hold_output`); a context manager that releases it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def release(self) -> None:
        lock = _held.get(_key(self.path))
        if lock is not None and lock.holds > 1:
            lock.holds -= 1
        else:
            release(self.path)

    def __enter__(self) -> OutputHold:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def hold_output(path: Path | str) -> OutputHold:
    """Hold the output file ``path`` (e.g. ``predict -o``) for this process: a :class:`StageError` at once when
    another process holds it. Take it before the work starts; it lasts until :meth:`OutputHold.release` (or the
    ``with`` block's end, or the process's). The folder is created when missing (the results are written there).
    Re-entrant: a second hold in this process is released by its own ``release``."""
    path = Path(path).absolute()
    current = _current(path)
    if current is not None:
        current.holds += 1
        return OutputHold(path)
    lock_file = output_lock_file(path)
    for _ in range(5):  # the lock file may be removed by a holder releasing it: lock the one at the path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StageError(f"{path}: cannot write there ({exc.strerror or exc})") from None
        if not _try_lock(fd, path, "this file"):
            break
        st = os.fstat(fd)
        lock = _Lock(fd, st.st_dev, st.st_ino, lock_file)
        if _same_file(lock, lock_file):
            _held[_key(path)] = lock
            break
        os.close(fd)
    return OutputHold(path)


@atexit.register
def _release_files() -> None:
    """Remove this process's output lock files at exit (folders hold no file; the kernel drops every lock)."""
    for key, lock in list(_held.items()):
        if lock.lock_file is not None:
            release(Path(key))
