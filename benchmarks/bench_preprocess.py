"""Preprocessing throughput: a naive per-frame loop versus the seqfer pipeline, on the same demo sequences.

    python benchmarks/bench_preprocess.py --root data/demo --sequences 40 --full

The naive loop is what public CK+ code typically does, made as fair as possible: detector and predictor built
ONCE (public code often rebuilds them per image), then for every frame: read it, run the dlib HOG detector with
``--naive-upsample`` upsampling passes (1 is dlib's and most tutorials' default), predict the 68 points on the
largest face, align the crop with the same ``stages.align.align_face``. No cache, one process.

The pipeline is ``pipeline.preprocess.run_preprocess`` with a fresh cache: decode, detect once and track,
align, trajectories, atomic cache writes and per-frame landmark tables, on 1 and 2 Ray workers. Ray start-up is
timed separately; actor start-up (building the models) is inside the pipeline's time.

``--full`` also times the whole demo set (every sequence) with 2 workers from a fresh cache.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.dataset import prepare_manifest  # noqa: E402
from pipeline.preprocess import run_preprocess  # noqa: E402
from pipeline.ray_runtime import ensure_ray  # noqa: E402
from stages.align import AlignConfig, align_face  # noqa: E402
from stages.landmarks.dlib.models import PREDICTOR_FILE, model_path  # noqa: E402


def naive_loop(frame_lists: list[list[str]], upsample: int) -> tuple[int, float, int]:
    """(frames, seconds, faces found) for the per-frame detect-predict-align loop."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path(PREDICTOR_FILE)))
    align_cfg = AlignConfig()
    frames = found = 0
    start = time.perf_counter()
    for paths in frame_lists:
        for path in paths:
            grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            frames += 1
            dets = detector(grey, upsample)
            if len(dets) == 0:
                continue
            box = max(dets, key=lambda r: r.width() * r.height())
            shape = predictor(grey, box)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            align_face(grey, points, align_cfg)
            found += 1
    return frames, time.perf_counter() - start, found


def pipeline_run(cfg_overrides: list[str], manifest, workers: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [*cfg_overrides, f"output_dir={tmp}", f"ray.workers={workers}"])
        start = time.perf_counter()
        summary = run_preprocess(cfg, manifest=manifest)
        seconds = time.perf_counter() - start
        if summary.skipped:
            raise RuntimeError("benchmark expected a fresh cache")
        return int(summary.extra.get("frames processed", 0)), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("data/demo"), help="demo set in the CK+ layout")
    ap.add_argument("--sequences", type=int, default=40, help="sequences timed with both the loop and the pipeline")
    ap.add_argument("--naive-upsample", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="also time the whole set with 2 workers")
    args = ap.parse_args()

    base = ["data.format=ckplus", f"data.root={args.root}"]
    with tempfile.TemporaryDirectory() as tmp:
        df, _ = prepare_manifest(load_config(None, [*base, f"output_dir={tmp}"]), quiet=True)
    subset = df.sort_values("sequence_id").head(args.sequences).reset_index(drop=True)
    frame_lists = [list(p) for p in subset["frame_paths"]]
    shape = cv2.imread(frame_lists[0][0], cv2.IMREAD_GRAYSCALE).shape

    t0 = time.perf_counter()
    from pipeline.config import RayConfig

    ensure_ray(RayConfig(workers=2))
    ray_start = time.perf_counter() - t0

    rows = []
    n, s, found = naive_loop(frame_lists, args.naive_upsample)
    naive_fps = n / s
    rows.append((f"naive loop (detect every frame, upsample={args.naive_upsample})", n, s, naive_fps, found))
    if args.naive_upsample != 0:
        n0, s0, found0 = naive_loop(frame_lists, 0)
        rows.append(("naive loop (detect every frame, upsample=0)", n0, s0, n0 / s0, found0))
    for workers in (1, 2):
        n_p, s_p = pipeline_run(base, subset, workers)
        rows.append((f"seqfer pipeline, {workers} worker(s)", n_p, s_p, n_p / s_p, None))

    print(f"\n{len(subset)} sequences, frames {shape[1]}x{shape[0]}; Ray start-up {ray_start:.1f} s (not included)\n")
    print(f"| run | frames | seconds | frames/s | x naive (upsample={args.naive_upsample}) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, frames, seconds, fps, _found in rows:
        print(f"| {name} | {frames} | {seconds:.1f} | {fps:.0f} | {fps / naive_fps:.1f} |")

    if args.full:
        n_f, s_f = pipeline_run(base, df, 2)
        print(f"\nwhole set: {len(df)} sequences, {n_f} frames in {s_f:.1f} s = {n_f / s_f:.0f} frames/s "
              "(2 workers, fresh cache, decode + landmarks + align + trajectories + cache writes + tables)")


if __name__ == "__main__":
    main()
