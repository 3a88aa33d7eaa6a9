"""Demo-data generation speed, and how dlib sees the generated faces.

Generates a demo set (default: the CK+-sized one, 118 subjects, 327 labelled + ~33 unlabelled sequences, with
2 workers) into ``--out`` or a temporary folder, and prints seconds, sequences, frames, frames/s, size on disk
and the load average (the CPU is shared; note it beside any figure). ``--probe N`` then runs dlib's HOG
detector + 68-point predictor on the neutral (first) and apex (last) frame of N labelled sequences spread over
the classes, and prints detection rate and NME (mean point error / outer-eye-corner distance, against the
written true landmarks) per class. ckplus layout only for the probe.

Examples (from the repository root)::

    python benchmarks/bench_demo_data.py --faces ../shared/faces --probe 40
    python benchmarks/bench_demo_data.py --subjects 10 --workers 1 --out /tmp/demo10 --keep
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_manifests.demo import generate_demo  # noqa: E402
from data_manifests.demo.faces import dlib_landmarks  # noqa: E402
from data_manifests.schema import CKPLUS_CODES  # noqa: E402
from stages.face_geometry import nme  # noqa: E402


def probe_ckplus(root: Path, n: int) -> dict[str, dict[str, list[float | None]]]:
    """dlib NME (None = not detected) on first/last frames of ``n`` labelled sequences, round-robin by class."""
    by_class: dict[str, list[Path]] = defaultdict(list)
    for f in sorted((root / "Emotion").rglob("*_emotion.txt")):
        by_class[CKPLUS_CODES[int(float(f.read_text()))]].append(f.parent)
    picked: list[tuple[str, Path]] = []
    while len(picked) < n and any(by_class.values()):
        for cls in sorted(by_class):
            if by_class[cls] and len(picked) < n:
                picked.append((cls, by_class[cls].pop(0)))
    out: dict[str, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
    for cls, emo_dir in picked:
        rel = emo_dir.relative_to(root / "Emotion")
        frames = sorted((root / "cohn-kanade-images" / rel).glob("*.png"))
        for tag, f in (("neutral", frames[0]), ("apex", frames[-1])):
            truth = np.loadtxt(root / "Landmarks" / rel / f"{f.stem}_landmarks.txt")
            found = dlib_landmarks(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
            out[cls][tag].append(None if found is None else nme(found, truth))
    return out


def _fmt(values: list[float | None]) -> str:
    found = [v for v in values if v is not None]
    mean = f"{100 * np.mean(found):.2f}%" if found else "n/a"
    worst = f"{100 * max(found):.2f}%" if found else "n/a"
    return f"detected {len(found)}/{len(values)}, NME mean {mean}, max {worst}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary output")
    ap.add_argument("--layout", default="ckplus", choices=["ckplus", "oulu", "videos"])
    ap.add_argument("--subjects", type=int, default=118)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    default_faces = Path(__file__).resolve().parent.parent.parent / "shared" / "faces"
    ap.add_argument("--faces", type=Path, default=default_faces if default_faces.is_dir() else None)
    ap.add_argument("--probe", type=int, default=0, help="dlib probe on N sequences (ckplus layout)")
    args = ap.parse_args(argv)

    tmp = None
    out = args.out
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="seqfer_demo_bench_"))
        out = tmp / "demo"
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    summary = generate_demo(
        out, layout=args.layout, n_subjects=args.subjects, seed=args.seed, faces_dir=args.faces, workers=args.workers
    )
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(summary.text())
    print(
        f"seconds {wall:.1f}  sequences {summary.n_sequences}  frames {summary.n_frames}  "
        f"frames/s {summary.n_frames / wall:.1f}  workers {args.workers}  size {size / 2**20:.0f} MiB  "
        f"load avg before {load0[0]:.2f} after {load1[0]:.2f} (cpus {os.cpu_count()})"
    )
    if args.probe and args.layout == "ckplus":
        t1 = time.perf_counter()
        res = probe_ckplus(out, args.probe)
        print(f"dlib probe ({args.probe} sequences, {time.perf_counter() - t1:.1f} s):")
        for tag in ("neutral", "apex"):
            print(f"  {tag:8s} all       {_fmt([v for c in res for v in res[c][tag]])}")
        for cls in sorted(res):
            print(f"  apex     {cls:9s} {_fmt(res[cls]['apex'])}")
    if tmp is not None and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp is not None:
        print(f"kept {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
