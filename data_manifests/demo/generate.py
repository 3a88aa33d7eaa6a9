"""``generate_demo``: write a synthetic CK+ / Oulu-CASIA / video dataset from real face photos.

The set is deterministic for a seed, whatever the worker count: each sequence draws its randomness from
``(seed, sequence index)`` and each subject from ``(seed, subject index)``. Generation is resumable and
detectably complete: ``.seqfer-demo.json`` (the parameters) is written first, ``.progress/<index>`` after each
finished sequence, ``.complete`` (parameters + summary) last. Re-running on a complete folder with the same
parameters returns at once; on a folder interrupted with the same parameters it finishes the missing sequences.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_manifests.demo import faces as fc
from data_manifests.demo import plan as pl
from data_manifests.demo import prototypes as proto
from data_manifests.demo import sequences as sq
from data_manifests.demo.writers import LAYOUTS, Layout, write_demo_file
from data_manifests.errors import ManifestError
from stages import face_geometry as fg
from stages.atomic_io import atomic_write_text

GENERATOR_VERSION = 1
PARAMS_FILE = ".seqfer-demo.json"
COMPLETE_FILE = ".complete"
PROGRESS_DIR = ".progress"
DEFAULT_FRAMES = (10, 30)
NEUTRAL_MAX_NME = 0.05


@dataclass
class DemoSummary:
    """What a generation produced (``seconds``: wall time of this call; ``reused``: the folder was already
    complete with the same parameters and nothing was written)."""

    out_dir: Path
    layout: str
    n_subjects: int
    n_sequences: int
    n_labelled: int
    counts: dict[str, int]
    faces_source: str
    seconds: float
    n_frames: int = 0
    seed: int = 0
    reused: bool = False
    resumed: int = 0
    classes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """One summary line for the CLI."""
        per = ", ".join(f"{c} {n}" for c, n in self.counts.items())
        what = "already complete" if self.reused else f"{self.seconds:.1f} s"
        extra = f", {self.resumed} resumed" if self.resumed else ""
        return (
            f"demo data ({self.layout}) in {self.out_dir}: {self.n_subjects} subjects, {self.n_sequences} "
            f"sequences ({self.n_labelled} labelled: {per}), {self.n_frames} frames, faces: "
            f"{self.faces_source}, seed {self.seed}; {what}{extra}"
        )

    def to_json(self) -> dict:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


# ---------------------------------------------------------------------------------------------- workers

_JOB: dict = {}


def _init_job(
    subjects: list[fc.SubjectFace],
    layout_name: str,
    seed: int,
    frame_range: tuple[int, int],
    root: str,
    morph_all: bool,
) -> None:
    """Per-process state (also used in-process when workers == 1)."""
    _JOB.clear()
    _JOB.update(
        subjects=subjects,
        layout=LAYOUTS[layout_name],
        seed=seed,
        frame_range=frame_range,
        root=Path(root),
        morph_all=morph_all,
        bases={},
    )


def _subject(index: int) -> tuple[sq.SubjectBase, sq.SubjectStyle]:
    bases = _JOB["bases"]
    if index not in bases:
        layout: Layout = _JOB["layout"]
        face = _JOB["subjects"][index]
        style = sq.subject_style(_JOB["seed"], index, layout.canvas, morph=_JOB["morph_all"] or face.variant > 0)
        if len(bases) >= 4:
            bases.pop(next(iter(bases)))
        bases[index] = (sq.build_subject(face, layout.canvas, style), style)
    return bases[index]


def render_spec(
    spec: pl.SequenceSpec, seed: int, subject: tuple[sq.SubjectBase, sq.SubjectStyle], frame_range: tuple[int, int]
) -> sq.RenderedSequence:
    """Render one planned sequence: its length, expression and noise come from ``(seed, spec.index)``."""
    base, style = subject
    rng = np.random.default_rng([seed, 1, spec.index])
    lo, hi = frame_range
    n_frames = int(np.clip(round(rng.normal(lo + 0.35 * (hi - lo), (hi - lo) / 4)), lo, hi))  # CK+-like, ~17
    expr = proto.sample_expression(spec.label, rng, style.expressiveness, style.au_gains)
    return sq.render_sequence(base, style, expr, n_frames, rng)


def _run_one(spec: pl.SequenceSpec) -> tuple[int, int]:
    """Render and write one sequence, then mark it done; returns (index, frames)."""
    seq = render_spec(spec, _JOB["seed"], _subject(spec.subject_index), _JOB["frame_range"])
    root: Path = _JOB["root"]
    n = _JOB["layout"].write(root, spec, seq)
    write_demo_file(root / PROGRESS_DIR / f"{spec.index:06d}", str(n).encode())
    return spec.index, n


# ---------------------------------------------------------------------------------------------- main


def _plan(layout: Layout, n_subjects: int, n_sequences: int | None, seed: int) -> list[pl.SequenceSpec]:
    rng = np.random.default_rng([seed, 0])
    if layout.oulu_plan:
        if n_sequences is not None and n_sequences != 6 * n_subjects:
            raise ManifestError(
                f"layout 'oulu' has every subject show all 6 classes: n_sequences must be "
                f"{6 * n_subjects} for {n_subjects} subjects (or omitted), not {n_sequences}"
            )
        return pl.oulu_plan(n_subjects, rng)
    n_lab = pl.default_sequences(n_subjects) if n_sequences is None else n_sequences
    try:
        return pl.ckplus_plan(n_subjects, n_lab, rng, pl.EXTRA_UNLABELLED if layout.unlabelled else 0.0)
    except ValueError as exc:
        raise ManifestError(f"demo plan: {exc}") from exc


def _neutral_frame_check(layout: Layout, seed: int) -> Callable[[fc.SubjectFace, int], bool]:
    """Accept a photo for subject ``index`` when dlib finds its finished neutral frame (placed, neutralised,
    in the layout's size and colour) within 5% NME of the true landmarks."""

    def accept(face: fc.SubjectFace, index: int) -> bool:
        style = sq.subject_style(seed, index, layout.canvas, morph=face.variant > 0)
        try:
            base = sq.build_subject(face, layout.canvas, style)
        except ValueError:  # landmarks that cannot be meshed (crossing lips)
            return False
        image = base.image if base.image.ndim == 2 else base.image[..., ::-1]
        found = fc.dlib_landmarks(image, upsample=0 if base.measures.iod >= 80 else 1)
        return found is not None and fg.nme(found, base.landmarks) < NEUTRAL_MAX_NME

    return accept


def _readme(layout: Layout, params: dict, summary: DemoSummary) -> str:
    return (
        "SYNTHETIC DEMO DATA - not CK+, not Oulu-CASIA.\n\n"
        f"Generated by seqfer's demo-data generator (version {GENERATOR_VERSION}) in the '{layout.name}' layout\n"
        f"({layout.description}).\n"
        f"Seed: {params['seed']}. Subjects: {summary.n_subjects}. Sequences: {summary.n_sequences} "
        f"({summary.n_labelled} labelled). Frames: {summary.n_frames}.\n"
        f"Source faces: {summary.faces_source}.\n\n"
        "Each subject is a real photo placed upright on a canvas; each sequence warps it piecewise-affinely\n"
        "from neutral (first frame, unwarped) to an expression apex (last frame) built from action-unit-like\n"
        "landmark displacements, with slight head motion, lighting changes and sensor noise. The landmark\n"
        "files / _truth arrays hold the true warped 68 landmarks ((x, y), 0-based pixels).\n"
        "Class counts: " + ", ".join(f"{c} {n}" for c, n in summary.counts.items()) + "\n"
    )


def _prepare_folder(out: Path, layout: Layout, params: dict) -> DemoSummary | None:
    """Return the stored summary when ``out`` is complete with ``params``; clear a stale interrupted run;
    refuse a folder that is not ours."""
    complete = out / COMPLETE_FILE
    if complete.is_file():
        stored = json.loads(complete.read_text())
        if stored.get("params") == params:
            s = stored["summary"]
            s["out_dir"] = out
            return DemoSummary(**{**s, "reused": True, "seconds": 0.0, "resumed": 0})
        raise ManifestError(
            f"{out}: already holds a demo set made with other parameters "
            f"({stored.get('params')}); choose another folder or delete it"
        )
    marker = out / PARAMS_FILE
    if marker.is_file():
        if json.loads(marker.read_text()) != params:  # interrupted run with other parameters: start over
            for name in (
                *layout.trees,
                *(t for lay in LAYOUTS.values() for t in lay.trees),
                PROGRESS_DIR,
                "README.txt",
            ):
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
    elif out.exists() and any(out.iterdir()):
        raise ManifestError(f"{out}: folder is not empty and holds no seqfer demo set; choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(params, sort_keys=True))
    (out / PROGRESS_DIR).mkdir(exist_ok=True)
    return None


def generate_demo(
    out_dir: Path,
    layout: str = "ckplus",
    n_subjects: int = 118,
    seed: int = 0,
    faces_dir: Path | None = None,
    n_sequences: int | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    frame_range: tuple[int, int] = DEFAULT_FRAMES,
) -> DemoSummary:
    """Generate (or finish, or reuse) a synthetic dataset in ``out_dir``; see the module doc.

    ``layout``: ``ckplus`` | ``oulu`` | ``videos``. ``n_subjects``: distinct subjects (each a different photo
    while ``faces_dir`` has enough usable ones). ``n_sequences``: labelled sequences (default CK+-proportional,
    ``round(327 * n_subjects / 118)``; ``oulu`` is always 6 per subject); ckplus adds ~10% unlabelled ones.
    ``faces_dir``: photos + 300-W ``.pts`` files; None uses scikit-image's astronaut (warns). ``workers``:
    processes (spawned). ``progress(done, total)`` is called after each sequence. ``frame_range``: inclusive
    range of frames per sequence. Raises :class:`ManifestError` for a bad layout, folder or faces folder.
    """
    t0 = time.perf_counter()
    lo, hi = _check_arguments(layout, n_subjects, frame_range)
    lay = LAYOUTS[layout]
    out = Path(out_dir)
    faces_source = str(Path(faces_dir).resolve()) if faces_dir is not None else fc.FALLBACK_SOURCE
    specs = _plan(lay, n_subjects, n_sequences, seed)
    params = {
        "generator_version": GENERATOR_VERSION,
        "layout": layout,
        "n_subjects": n_subjects,
        "seed": seed,
        "n_sequences": len(specs),
        "faces_source": faces_source,
        "frame_range": [lo, hi],
    }
    reused = _prepare_folder(out, lay, params)
    if reused is not None:
        return reused

    subjects = (
        fc.choose_faces(Path(faces_dir), n_subjects, accept=_neutral_frame_check(lay, seed))
        if faces_dir is not None
        else fc.fallback_faces(n_subjects)
    )
    frames = _finished_sequences(out / PROGRESS_DIR)
    resumed = len(frames)
    todo = [s for s in specs if s.index not in frames]
    if progress and resumed:
        progress(resumed, len(specs))
    job = (subjects, layout, seed, (lo, hi), str(out), faces_dir is None)
    for index, n in _execute(todo, job, workers):
        frames[index] = n
        if progress:
            progress(len(frames), len(specs))

    summary = _summarise(out, layout, n_subjects, specs, faces_source, sum(frames.values()), seed, resumed)
    lay.finish(out, specs)
    atomic_write_text(out / "README.txt", _readme(lay, params, summary))
    summary.seconds = time.perf_counter() - t0
    atomic_write_text(out / COMPLETE_FILE, json.dumps({"params": params, "summary": summary.to_json()}, indent=1))
    shutil.rmtree(out / PROGRESS_DIR, ignore_errors=True)
    return summary


def _check_arguments(layout: str, n_subjects: int, frame_range: tuple[int, int]) -> tuple[int, int]:
    """The frame range as ints (low, high); :class:`ManifestError` for an unknown layout, no subjects or a frame
    range that is not ``2 <= low <= high``."""
    if layout not in LAYOUTS:
        raise ManifestError(f"unknown demo layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if n_subjects < 1:
        raise ManifestError(f"n_subjects must be >= 1, not {n_subjects}")
    lo, hi = int(frame_range[0]), int(frame_range[1])
    if not 2 <= lo <= hi:
        raise ManifestError(f"frame_range must be 2 <= low <= high, not {frame_range}")
    return lo, hi


def _finished_sequences(progress_dir: Path) -> dict[int, int]:
    """Sequence index -> frames written, from the markers of an earlier, interrupted run."""
    frames: dict[int, int] = {}
    for p in progress_dir.iterdir():
        if p.name.isdigit():
            frames[int(p.name)] = int(p.read_text() or 0)
    return frames


def _summarise(
    out: Path,
    layout: str,
    n_subjects: int,
    specs: list[pl.SequenceSpec],
    faces_source: str,
    n_frames: int,
    seed: int,
    resumed: int,
) -> DemoSummary:
    """The summary of a finished set (``seconds`` still 0): labelled counts per class in CK+ class order."""
    labelled = [s for s in specs if s.label is not None]
    classes = sorted({s.label for s in labelled}, key=lambda c: list(pl.CKPLUS_COUNTS).index(c))
    counts = Counter(s.label for s in labelled)
    return DemoSummary(
        out_dir=out,
        layout=layout,
        n_subjects=n_subjects,
        n_sequences=len(specs),
        n_labelled=len(labelled),
        counts={c: counts[c] for c in classes},
        faces_source=faces_source,
        seconds=0.0,
        n_frames=n_frames,
        seed=seed,
        resumed=resumed,
        classes=classes,
    )


def _execute(todo: list[pl.SequenceSpec], job: tuple, workers: int) -> Iterable[tuple[int, int]]:
    if not todo:
        return
    if workers <= 1:
        _init_job(*job)
        try:
            for spec in todo:
                yield _run_one(spec)
        finally:
            _JOB.clear()
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes=min(workers, len(todo)), initializer=_init_job, initargs=job) as pool:
        yield from pool.imap_unordered(_run_one, todo, chunksize=1)
