"""Folders seqfer writes, and the rule that it only ever writes into or replaces a folder it wrote itself.

Every folder a verb creates (a model folder, a CV run folder, the preprocess and compare folders, prediction's
picture and timeline folders) holds a marker file, ``.seqfer-folder``: JSON ``{"tool": "seqfer", "kind": ...}``.
A verb may write into (:func:`claim_folder`) or replace (:func:`check_replaceable`) a folder only when it is
absent, empty, or carries the marker of the same kind. Anything else (a folder of someone's files, the run's own
OUTPUT_DIR, another verb's folder) is refused with a :class:`~stages.errors.StageError`, which the CLI prints as
one ``error:`` line with exit code 2, before any work is done.

Folders written by seqfer before the marker existed are recognised by their own files (``legacy``: names that
must all be present, with nothing outside ``allowed`` when that is given) and adopted.

A claimed folder is also held by this process until it ends (:func:`pipeline.runtime.folder_lock.lock_folder`):
a second run writing into it gets an ``error:`` line at once, naming the other run's pid, instead of mixing its
files with the first run's; a killed run leaves no lock behind. Claiming again in the same process succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from pipeline.runtime.folder_lock import folder_in_use, lock_folder
from stages.atomic_io import atomic_write_text
from stages.errors import StageError

MARKER = ".seqfer-folder"


def marker_kind(folder: Path) -> str | None:
    """The kind recorded in ``folder``'s marker, or None when it has no readable marker."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != "seqfer":
        return None
    kind = data.get("kind")
    return kind if isinstance(kind, str) else None


def write_marker(folder: Path, kind: str) -> None:
    """Mark ``folder`` (which must exist) as written by seqfer's ``kind`` verb."""
    atomic_write_text(Path(folder) / MARKER, json.dumps({"tool": "seqfer", "kind": kind}) + "\n")


def _is_legacy(folder: Path, legacy: Collection[str], allowed: Collection[str] | None) -> bool:
    if not legacy:
        return False
    names = {p.name for p in folder.iterdir()}
    return set(legacy) <= names and (allowed is None or names <= set(allowed) | {MARKER})


def _ours(folder: Path, kind: str, legacy: Collection[str], allowed: Collection[str] | None) -> bool:
    """Whether an existing ``folder`` may be written by ``kind``: empty, its marker, or a legacy folder."""
    if not folder.is_dir():
        raise StageError(f"{folder}: exists and is not a folder; choose another output location")
    if not any(folder.iterdir()):
        return True
    found = marker_kind(folder)
    if found is not None:
        if found != kind:
            raise StageError(f"{folder}: is a seqfer {found} folder, not a {kind} folder; choose another location")
        return True
    return _is_legacy(folder, legacy, allowed)


def _refuse(folder: Path, kind: str) -> StageError:
    return StageError(
        f"{folder}: folder exists and was not written by seqfer as a {kind} folder (no {MARKER} "
        "file); seqfer never writes over other files: choose another location or remove it yourself"
    )


def check_replaceable(
    folder: Path | str, kind: str, legacy: Collection[str] = (), allowed: Collection[str] | None = None
) -> None:
    """Raise :class:`StageError` unless ``folder`` is absent, empty, or a ``kind`` folder seqfer wrote (so a
    verb may delete and replace it) that no other run holds. Call it before the work starts, so a refusal costs
    nothing."""
    folder = Path(folder)
    if folder.exists() and not _ours(folder, kind, legacy, allowed):
        raise _refuse(folder, kind)
    busy = folder_in_use(folder) if folder.is_dir() else None
    if busy is not None:
        raise busy


def _make(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageError(f"{folder}: cannot create folder: {exc.strerror or exc}") from None


def claim_folder(
    folder: Path | str, kind: str, legacy: Collection[str] = (), allowed: Collection[str] | None = None
) -> Path:
    """Create ``folder`` (or accept one seqfer wrote as ``kind``), hold it for this process, mark it, and return
    it; :class:`StageError` for anything else at that path, or when another run holds it (see the module doc)."""
    folder = Path(folder)
    if folder.exists() and not _ours(folder, kind, legacy, allowed):
        raise _refuse(folder, kind)
    _make(folder)
    lock_folder(folder)
    if marker_kind(folder) != kind:
        write_marker(folder, kind)
    return folder


def hold_folder(folder: Path | str) -> Path:
    """Create ``folder`` when missing and hold it for this process (:func:`~pipeline.runtime.folder_lock.
    lock_folder`), without a marker or any check of its files: a run's OUTPUT_DIR, which holds the user's cache
    and manifest beside the verbs' folders. :class:`StageError` at once when another run holds it."""
    folder = Path(folder)
    _make(folder)
    lock_folder(folder)
    return folder
