"""How each ``landmarks.small_frame_search`` mode searches small frames: searches, faces found, time, points.

    python benchmarks/bench_small_frame_search.py --root ../shared/real/FER2013/train --n 1500 --seed 11
    python benchmarks/bench_small_frame_search.py --root ../shared/real/CK+48 --n 0
    python benchmarks/bench_small_frame_search.py --faces DIR --crop 48   # photos with 300-W .pts: NME too

Takes ``--n`` images (0: all) drawn with ``--seed`` from the class folders under ``--root`` (images smaller than
2x ``min_face_px``: the frames this setting is about), and runs the dlib landmarker's ``detect_frame`` on each with
every mode, in one process, one thread. Prints per mode: the detector's searches at the face-crop scale and on the
whole enlarged frame, the frames with a detected face, those given the whole-frame box, ms per frame (wall; the
machine's pace varies, compare modes within one run), and how far the points are from ``full``'s (mean point
distance in outer-eye distances: median, 90th percentile, share above 0.05).

``--faces DIR`` instead makes a tight ``--crop`` px grey crop of every photo with a 300-W ``.pts`` beside it (the
square around its landmarks, 1.25x their extent, like FER2013's and CK+48's framing) and adds each mode's NME
against those true points (outer-eye normalised, in %): faces from elsewhere, which no constant was tuned on.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.face_geometry import eye_distance  # noqa: E402
from stages.preprocess.landmarks import build_landmarker, nme  # noqa: E402
from stages.preprocess.landmarks.base import LandmarkConfig  # noqa: E402
from stages.preprocess.landmarks.provided.readers import read_landmarks  # noqa: E402

MODES = ("full", "crop_first", "crop_any")


def images(root: Path, n: int, seed: int) -> list[Path]:
    """``n`` image paths (all when 0) under ``root``'s class folders, sorted, then drawn with ``seed``."""
    paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif"))
    random.Random(seed).shuffle(paths)
    return paths[:n] if n else paths


def tight_crops(folder: Path, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(grey crops [size, size], their true points [68, 2]) of every photo in ``folder`` with a 300-W ``.pts``
    (1-based, made 0-based): the square around the points, 1.25x their extent, resized to ``size``."""
    crops, truths = [], []
    for photo in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png")):
        pts_file = photo.with_suffix(".pts")
        if not pts_file.is_file():
            continue
        image = cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE)
        points = np.asarray(read_landmarks(pts_file), np.float64).reshape(68, 2) - 1
        side = 1.25 * float((points.max(0) - points.min(0)).max())
        corner = (points.min(0) + points.max(0)) / 2 - side / 2
        scale = size / side
        matrix = np.float32([[scale, 0, -corner[0] * scale], [0, scale, -corner[1] * scale]])
        crops.append(cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE))
        truths.append((points - corner) * scale)
    return crops, truths


def run_mode(mode: str, frames: list[np.ndarray]) -> tuple[list, dict[int, int], float]:
    """(results, searches by canvas side, seconds) of ``detect_frame`` over ``frames`` with ``mode``."""
    landmarker = build_landmarker(LandmarkConfig(small_frame_search=mode))
    searches: dict[int, int] = {}
    detect = landmarker.detector.detect

    def counted(grey: np.ndarray, *args, **kwargs):
        searches[grey.shape[0]] = searches.get(grey.shape[0], 0) + 1
        return detect(grey, *args, **kwargs)

    for frame in frames[:10]:  # compile and warm up
        landmarker.detect_frame(frame)
    searches.clear()
    landmarker.detector.detect = counted
    start = time.perf_counter()
    results = [landmarker.detect_frame(frame) for frame in frames]
    return results, searches, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="class-folder image set (FER2013 train, CK+48)")
    ap.add_argument("--faces", type=Path, help="photos with 300-W .pts files: tight crops of them, NME too")
    ap.add_argument("--crop", type=int, default=48, help="--faces: side of the tight crops, px")
    ap.add_argument("--n", type=int, default=1500, help="--root: images to draw (0: all)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    if (args.root is None) == (args.faces is None):
        ap.error("give exactly one of --root and --faces")
    cv2.setNumThreads(1)
    truths: list[np.ndarray] | None = None
    if args.faces is not None:
        frames, truths = tight_crops(args.faces, args.crop)
        print(f"{args.faces}: {len(frames)} photos as {args.crop} px tight crops\n")
    else:
        frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in images(args.root, args.n, args.seed)]
        print(f"{args.root}: {len(frames)} images (seed {args.seed})\n")
    print(
        "| mode | crop-scale searches | whole-frame searches | detected | whole-frame box | ms / frame | "
        "points vs full: median / p90 / > 0.05 |" + (" NME mean / median % |" if truths else "")
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if truths else ""))
    reference = None
    for mode in MODES:
        results, searches, seconds = run_mode(mode, frames)
        reference = reference or results
        gaps = np.array(
            [
                np.linalg.norm(r.points - f.points, axis=1).mean() / eye_distance(f.points)
                for r, f in zip(results, reference, strict=True)
                if r.success and f.success
            ]
        )
        # the crop-scale canvas is the smaller one (150 px for a 48 px frame, the whole enlarged frame's 240 px)
        crop = searches[min(searches)] if searches and mode != "full" else 0
        whole = sum(searches.values()) - crop
        print(
            f"| {mode} | {crop} | {whole} | {sum(r.success and r.n_faces > 0 for r in results)} | "
            f"{sum('whole-frame' in (r.note or '') for r in results)} | {1000 * seconds / len(frames):.2f} | "
            f"{np.median(gaps):.4f} / {np.percentile(gaps, 90):.4f} / {np.mean(gaps > 0.05):.3f} |"
            + (_nme_cell(results, truths) if truths else "")
        )


def _nme_cell(results: list, truths: list[np.ndarray]) -> str:
    """`` mean / median |`` NME (%) of the frames with points against their true points."""
    errors = [nme(r.points, t) for r, t in zip(results, truths, strict=True) if r.success]
    return f" {100 * np.mean(errors):.2f} / {100 * np.median(errors):.2f} |"


if __name__ == "__main__":
    main()
