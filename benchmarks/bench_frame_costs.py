"""Per-frame costs that bound preprocessing: PNG decoding (OpenCV against :mod:`stages.preprocess.png`), and the
68-point
predictor (dlib's own against :mod:`stages.preprocess.landmarks.dlib.trees`), each with and without glibc's huge-page
malloc
(what ``ray.huge_pages`` gives the landmark workers).

    python benchmarks/bench_frame_costs.py --root /work/data_heldout118 [--sequences 30] [--pairs 3]

One process decodes the frames of the first ``--sequences`` CK+-layout sequences, grey, with ``cv2.imread`` and
with the PNG fast path (the files read from the page cache), alternating ``--pairs`` times, and prints milliseconds
per frame. The predictor part runs dlib's HOG detector once per sequence and then the predictor on every frame
from that box (a tracked frame's call), in fresh subprocesses: for each implementation, ``--pairs`` times without
and with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` alternating, since the tunable is read at process start. It
reports CPU time per call (wall time moves with whatever else runs) and the process's AnonHugePages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.runtime.ray_start import HUGE_PAGES_TUNABLE  # noqa: E402


def frame_lists(root: Path, n: int) -> list[list[str]]:
    folders = sorted(p for p in (root / "cohn-kanade-images").glob("S*/*") if p.is_dir())[:n]
    return [sorted(str(f) for f in folder.glob("*.png")) for folder in folders]


def predictor_child(root: Path, n: int, impl: str) -> None:
    """Print one JSON line: CPU ms per predictor call over every frame, and AnonHugePages in kB."""
    import cv2
    import dlib

    from stages.preprocess.landmarks.dlib.models import DlibShapePredictor

    detector = dlib.get_frontal_face_detector()
    predictor = DlibShapePredictor(impl=impl)
    work = []
    for frames in frame_lists(root, n):
        images = [cv2.imread(f, cv2.IMREAD_GRAYSCALE) for f in frames]
        found = detector(images[0], 0)
        if found:
            r = found[0]
            work += [(image, (r.left(), r.top(), r.right(), r.bottom())) for image in images]
    for image, box in work[:50]:  # warm-up
        predictor.predict(image, box)
    cpu = time.process_time()
    for image, box in work:
        predictor.predict(image, box)
    cpu = time.process_time() - cpu
    huge = next((int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if "AnonHuge" in line), 0)
    print(json.dumps({"ms_per_call": 1000 * cpu / max(1, len(work)), "calls": len(work), "anon_huge_kb": huge}))


def main(args: argparse.Namespace) -> None:
    if args.child:
        predictor_child(args.root, args.sequences, args.impl)
        return
    import cv2
    import numpy as np

    from stages.preprocess.png import decode_png

    paths = [f for frames in frame_lists(args.root, args.sequences) for f in frames]
    for path in paths:  # page cache warm, so the figure is decoding, not the disk
        Path(path).read_bytes()
    decode_png(Path(paths[0]).read_bytes(), "grey")  # compiled before timing
    print(f"{args.root}: {len(paths)} frames; load average {os.getloadavg()[0]:.2f}")
    readers = {
        "cv2.imread": lambda path: cv2.imread(path, cv2.IMREAD_GRAYSCALE),
        "stages.preprocess.png": lambda path: decode_png(Path(path).read_bytes(), "grey"),
    }
    for path in paths[:20]:
        assert np.array_equal(readers["cv2.imread"](path), readers["stages.preprocess.png"](path)), path
    for pair in range(args.pairs):
        for name, read in readers.items():
            start = time.perf_counter()
            for path in paths:
                read(path)
            print(
                f"pair {pair + 1}, {name} (grey PNG): {1000 * (time.perf_counter() - start) / len(paths):.2f} ms/frame"
            )
    base_env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    huge_env = {**base_env, "GLIBC_TUNABLES": HUGE_PAGES_TUNABLE}
    for impl in ("dlib", "trees"):
        cmd = [sys.executable, __file__, "--child", "--root", str(args.root), "--sequences", str(args.sequences)]
        cmd += ["--impl", impl]
        for pair in range(args.pairs):
            for label, env in (("4 KiB pages", base_env), ("huge pages", huge_env)):
                out = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)
                print(
                    f"pair {pair + 1}, predictor_impl={impl}, {label}: {out['ms_per_call']:.2f} ms CPU per call over "
                    f"{out['calls']} tracked frames, AnonHugePages {out['anon_huge_kb'] / 1024:.0f} MiB"
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="a CK+-layout set (e.g. a held-out demo set)")
    parser.add_argument("--sequences", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="trees", help=argparse.SUPPRESS)
    main(parser.parse_args())
