"""Landmark accuracy and speed: NME (outer-eye-corner normalised) and milliseconds / frames per second.

Two modes:

- ``--faces DIR``: every ``*.jpg``/``*.png`` with a 300-W ``.pts`` beside it (1-based, 1 subtracted) -> NME mean,
  median and failures of single-image detection + prediction, and ms per face for each of the two steps.
- ``--ckplus ROOT``: sequences in the CK+ layout (``cohn-kanade-images/S*/NNN/*.png`` with
  ``Landmarks/S*/NNN/<frame>_landmarks.txt``, taken as 0-based unless ``--landmark-offset 1``) -> NME and
  frames/s of tracking (detect once, then follow) versus per-frame detection + prediction.
  :func:`compare_tracking` does the same for any iterable of (frames, true landmarks) sequences.

Examples (from the repository root)::

    python benchmarks/bench_landmarks_nme.py --faces ../shared/faces
    python benchmarks/bench_landmarks_nme.py --ckplus data/demo --limit 20
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.image import to_grey  # noqa: E402
from stages.preprocess.landmarks import LandmarkConfig, build_landmarker, nme  # noqa: E402
from stages.preprocess.landmarks.provided.readers import read_landmarks  # noqa: E402
from stages.preprocess.landmarks.tracker import TrackingLandmarker, choose_face  # noqa: E402


def _summary(errors: Sequence[float], failures: int, total: int) -> str:
    if not errors:
        return f"NME mean n/a, median n/a, failures {failures}/{total}"
    e = np.asarray(errors) * 100
    return (
        f"NME mean {e.mean():.2f}%, median {np.median(e):.2f}%, p90 {np.percentile(e, 90):.2f}%, "
        f"failures {failures}/{total}"
    )


# -------------------------------------------------------------------------------------------- faces mode


def bench_faces(folder: Path, cfg: LandmarkConfig, limit: int | None = None) -> dict:
    """Single-image detection + prediction on every face with a .pts file; timings per step."""
    landmarker = build_landmarker(cfg)
    if not isinstance(landmarker, TrackingLandmarker):
        raise SystemExit(f"--faces needs a detector backend, not {cfg.backend!r}")
    images = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png") and p.with_suffix(".pts").exists()
    )[:limit]
    if not images:
        raise SystemExit(f"no images with .pts files in {folder}")
    errors, failures, t_detect, t_predict = [], 0, 0.0, 0.0
    for path in images:
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        truth = read_landmarks(path.with_suffix(".pts"))
        grey = to_grey(image)
        start = time.perf_counter()
        faces = landmarker.detector.detect(grey)
        t_detect += time.perf_counter() - start
        if not faces:
            failures += 1
            continue
        box = choose_face(faces, grey.shape, cfg.multi_face).box
        prepared = landmarker.predictor.prepare(image)
        start = time.perf_counter()
        points = landmarker.predictor.predict(prepared, box)
        t_predict += time.perf_counter() - start
        errors.append(nme(points, truth))
    n = len(images)
    return {
        "faces": n,
        "failures": failures,
        "nme": errors,
        "ms_detect": 1000 * t_detect / n,
        "ms_predict": 1000 * t_predict / max(1, n - failures),
    }


# -------------------------------------------------------------------------------------------- sequences mode


def compare_tracking(sequences: Iterable[tuple[Sequence[np.ndarray], np.ndarray]], cfg: LandmarkConfig) -> dict:
    """NME and speed of tracking (``track=True``) vs per-frame detection (``track=False``) on (frames [T of
    uint8 images], true landmarks [T, 68, 2]) sequences. Only landmarking is timed."""
    runners = {
        "tracking": build_landmarker(cfg.model_copy(update={"track": True})),
        "per-frame": build_landmarker(cfg.model_copy(update={"track": False})),
    }
    out = {name: {"nme": [], "failures": 0, "frames": 0, "seconds": 0.0, "detections": 0} for name in runners}
    n_sequences = 0
    for frames, truth in sequences:
        n_sequences += 1
        for name, landmarker in runners.items():
            start = time.perf_counter()
            results = list(landmarker.track_sequence(frames))
            stats = out[name]
            stats["seconds"] += time.perf_counter() - start
            stats["frames"] += len(frames)
            for result, true in zip(results, truth, strict=True):
                stats["detections"] += int(result.detected)
                if result.success:
                    stats["nme"].append(nme(result.points, true))
                else:
                    stats["failures"] += 1
    return {"sequences": n_sequences, **out}


def ckplus_sequences(
    root: Path, limit: int | None = None, offset: float = 0.0
) -> Iterable[tuple[list[np.ndarray], np.ndarray]]:
    """(grey frames, true landmarks) of each CK+ sequence whose every frame has a landmark file."""
    taken = 0
    for folder in sorted((root / "cohn-kanade-images").glob("S*/*")):
        if limit is not None and taken >= limit:
            return
        frames = sorted(folder.glob("*.png"))
        marks = [
            root / "Landmarks" / folder.relative_to(root / "cohn-kanade-images") / f"{f.stem}_landmarks.txt"
            for f in frames
        ]
        if not frames or not all(m.exists() for m in marks):
            continue
        taken += 1
        yield (
            [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in frames],
            np.stack([read_landmarks(m) - offset for m in marks]),
        )


# -------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, help="folder of face images with 300-W .pts files")
    parser.add_argument("--ckplus", type=Path, help="root of a CK+-layout tree (cohn-kanade-images/, Landmarks/)")
    parser.add_argument("--backend", default="dlib")
    parser.add_argument("--predictor-impl", choices=["trees", "dlib"], default="trees", help="dlib backend")
    parser.add_argument("--subpixel", action="store_true", help="dlib backend, trees: unrounded points")
    parser.add_argument("--detector", default="hog", choices=["hog", "mmod"])
    parser.add_argument("--fan-weights", default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many faces / sequences")
    parser.add_argument(
        "--landmark-offset",
        type=float,
        default=0.0,
        help="subtracted from CK+ landmark files (1 for 1-based coordinates)",
    )
    args = parser.parse_args(argv)
    if not args.faces and not args.ckplus:
        parser.error("give --faces DIR and/or --ckplus ROOT")
    cfg = LandmarkConfig(
        backend=args.backend,
        detector=args.detector,
        fan_weights=args.fan_weights,
        predictor_impl=args.predictor_impl,
        subpixel=args.subpixel,
    )
    if args.faces:
        r = bench_faces(args.faces, cfg, args.limit)
        print(f"faces ({cfg.backend}/{cfg.detector}, {r['faces']} images from {args.faces}):")
        print(f"  {_summary(r['nme'], r['failures'], r['faces'])}")
        print(f"  detection {r['ms_detect']:.1f} ms/face, prediction {r['ms_predict']:.2f} ms/face")
    if args.ckplus:
        r = compare_tracking(ckplus_sequences(args.ckplus, args.limit, args.landmark_offset), cfg)
        print(f"CK+ sequences ({cfg.backend}/{cfg.detector}, {r['sequences']} from {args.ckplus}):")
        for name in ("tracking", "per-frame"):
            s = r[name]
            fps = s["frames"] / s["seconds"] if s["seconds"] else float("nan")
            print(
                f"  {name:9s}: {_summary(s['nme'], s['failures'], s['frames'])}, {fps:.1f} frames/s, "
                f"{s['detections']} detector runs"
            )


if __name__ == "__main__":
    main()
