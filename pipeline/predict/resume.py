"""The resume journal of a batch: one line per finished input, keyed by model, input and options, reused on a re-run."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pipeline.predict.inputs import PredictInput
from pipeline.predict.rows import PredictOptions
from pipeline.runtime.run_key import run_key
from stages.atomic_io import sibling_name
from stages.preprocess.cache import source_fingerprint
from stages.record import SequenceStatus

RETRY_STATUSES = frozenset({SequenceStatus.ERROR, SequenceStatus.TIMEOUT})
"""Rows with these statuses are recomputed on a re-run, not reused."""


def journal_path(output: Path) -> Path:
    """The journal beside the results file: ``<OUT>.resume.jsonl`` (cut short with a hash when that name would
    be too long for the file system)."""
    return output.with_name(sibling_name(output.name, ".resume.jsonl"))


def input_key(bundle_id: str, pin: PredictInput, opts: PredictOptions) -> str:
    """What an input's row depends on: the model's fingerprint, the input's name, its files (paths, sizes,
    mtimes) or problem, its true label and the per-input options."""
    identity = (
        source_fingerprint(list(pin.source.frame_paths), pin.source.video_path)
        if pin.source is not None
        else pin.problem
    )
    return run_key(
        "predict",
        bundle_id,
        pin.name,
        identity,
        pin.true_label,
        opts.window,
        opts.stride,
        opts.visualize_dir is not None,
    )


def load_resume(path: Path) -> dict[str, dict]:
    """key -> row of every reusable line in the journal at ``path`` (none when it is missing). Lines cut short
    by a kill, lines this code did not write and rows with a :data:`RETRY_STATUSES` status are skipped."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8", errors="replace") as fh:  # line by line: a long journal is never read whole
        for line in fh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: that input is simply recomputed
                continue
            if not (
                isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("row"), dict)
            ):
                continue  # not a line this code wrote: ignored, that input is recomputed
            if entry["row"].get("status") not in RETRY_STATUSES:
                done[entry["key"]] = entry["row"]
    return done


def _ends_mid_line(path: Path) -> bool:
    """Whether the file at ``path`` exists, is not empty and does not end with a newline (reads its last byte)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


FSYNC_SECONDS = 2.0
"""The journal is fsynced at most this often (and when it is closed). A killed process loses nothing flushed;
only a crash of the machine itself can lose the last seconds of rows, which are then recomputed."""


@contextmanager
def resume_journal(path: Path) -> Iterator[Callable[[Sequence[tuple[str, dict]]], None]]:
    """Yield ``record(pairs)``, which appends one line per (key, row) of ``pairs`` to the journal at ``path`` in
    one write and flushes it at once (a chunk of rows costs one system call, not one per row).

    An append-only journal, not an :mod:`stages.atomic_io` whole-file write: it grows as inputs finish so that a
    killed batch keeps its work, and :func:`load_resume` skips a last line cut short."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cut_short = _ends_mid_line(path)
    with open(path, "a", encoding="utf-8") as fh:
        if cut_short:  # a line cut short by a kill: end it, so that the next row starts a line of its own
            fh.write("\n")
        synced = time.monotonic()

        def record(pairs: Sequence[tuple[str, dict]]) -> None:
            nonlocal synced
            if not pairs:
                return
            fh.write("".join(json.dumps({"key": key, "row": row}) + "\n" for key, row in pairs))
            fh.flush()
            if time.monotonic() - synced >= FSYNC_SECONDS:
                os.fsync(fh.fileno())
                synced = time.monotonic()

        try:
            yield record
        finally:
            fh.flush()
            os.fsync(fh.fileno())
