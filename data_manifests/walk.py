"""Listing dataset folders: natural name order, real paths, and the entries no scan can use (bad names, links)."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data_manifests.scan_common import ScanReport

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``f2`` before ``f10``)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in _DIGITS.split(name) if p)


def list_dir(path: Path) -> list[os.DirEntry]:
    """Entries of a folder sorted naturally by name, names equal but for case in code-point order (everything,
    unchecked: see :func:`entries`)."""
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: (natural_key(e.name), e.name))


NOT_UTF8 = "file name is not valid UTF-8; rename it"


def shown(path: str | bytes | os.PathLike) -> str:
    """``path`` as printable, storable text: bytes that are not valid UTF-8 (Python's surrogate escapes, as in
    ``'\\udcff'``) are written ``\\xff``; any other path is returned unchanged."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def is_valid_name(name: str) -> bool:
    """True when ``name`` is valid UTF-8 text (Parquet, CSV and the terminal can hold it)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Entry:
    """One folder entry as :func:`entries` gives it: its name, its path as listed, its real path (links
    resolved) and whether that real path is a folder or a regular file (neither for a device, socket, fifo)."""

    name: str
    path: str
    real: str
    dir: bool
    file: bool

    def is_dir(self) -> bool:
        return self.dir

    def is_file(self) -> bool:
        return self.file


def entries(folder: Path | str, report: ScanReport) -> list[Entry]:
    """The entries of ``folder`` in natural name order that can be used, each with its real path.

    Reported as skipped and left out: a name that is not valid UTF-8, a broken link, a link loop (a link to
    itself, or to the folder it lies in or one above it), a link that cannot be read, and the whole folder when it
    cannot be listed. Taking an entry (counting each real path once) is the caller's step:
    :meth:`ScanReport.claim`."""
    folder_real = os.path.realpath(folder)
    try:
        listed = list_dir(Path(folder))
    except OSError as exc:
        report.skip(folder, f"unreadable folder: {exc.strerror or type(exc).__name__}")
        return []
    out: list[Entry] = []
    for e in listed:
        if not is_valid_name(e.name):
            report.skip(e.path, NOT_UTF8)
            continue
        real: str | None = os.path.join(folder_real, e.name)
        if e.is_symlink():
            real = _link_target(e, folder_real, report)
            if real is None:
                continue
        out.append(Entry(e.name, e.path, real, e.is_dir(), e.is_file()))
    return out


def _link_target(link: os.DirEntry, folder_real: str, report: ScanReport) -> str | None:
    """The real path a link leads to, or None after reporting why it leads nowhere usable."""
    try:
        target = shown(os.readlink(link.path))
    except OSError:
        target = "?"
    try:
        os.stat(link.path)
    except FileNotFoundError:
        report.skip(link.path, f"broken link: points to {target}, which does not exist")
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            report.skip(link.path, f"link loop: {target} leads back to itself")
        else:
            report.skip(link.path, f"unreadable link: {exc.strerror or type(exc).__name__}")
        return None
    real = os.path.realpath(link.path)
    if folder_real == real or folder_real.startswith(real.rstrip(os.sep) + os.sep):
        report.skip(link.path, f"link loop: points to {shown(real)}, a folder it lies in")
        return None
    return real
