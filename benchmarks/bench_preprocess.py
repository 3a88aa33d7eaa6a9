"""Preprocessing throughput: a naive per-frame loop and the whole `seqfer preprocess` command, in one run.

    python benchmarks/bench_preprocess.py --root /work/data_heldout40
    python benchmarks/bench_preprocess.py --faces DIR --subjects 40 --data /tmp/demo_from_my_faces
    python benchmarks/bench_preprocess.py --folder ../shared/real/FER2013/train
    python benchmarks/bench_preprocess.py --folder FER2013/train --set preprocess.landmarks.tight_crops=true

``--folder ROOT`` times the whole command on a class-folder set of one image per item (FER2013's ``train`` as it
ships, CK+48), with ``--config`` (default ``configs/ck48.yaml``: its preprocessing) and every image its own
sequence (``data.name_pattern`` ``^(?P<subject>.+)$``; ``--name-pattern`` changes it): items/s, the bytes written
(output folder and cache, ``du -sb``) against the input's, and the same breakdown; no naive loop.

``--faces DIR`` (photos with 300-W ``.pts`` files) first generates a CK+-layout demo set from those faces with
``seqfer demo-data`` into ``--data`` (kept: generating a CK+-sized set takes ~80 s), so anyone can measure on faces
of their own; ``--root`` uses an existing CK+-layout set.

The naive loop is what public CK+ code typically does, made as fair as possible: detector and predictor built
ONCE, then for every frame: read it, run dlib's HOG detector with ``--naive-upsample`` passes (1 is dlib's and
most tutorials' default), predict the 68 points on the largest face, align with the same
``stages.preprocess.align.align_face``; no cache, one process. It runs on the first ``--naive-sequences`` sequences
(sorted
by id) and its frames/s is compared with the whole command's.

The whole command is ``seqfer preprocess configs/ckplus.yaml`` in a fresh process with a fresh output folder,
timed from process start to its exit (the summary is written before it exits): interpreter, imports, manifest,
Ray start, actors, every sequence, the outputs. Its summary.json supplies the per-stage breakdown, the time to the
first finished sequence and the peak RSS of the driver and each worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stages.preprocess.align import AlignConfig, align_face  # noqa: E402
from stages.preprocess.landmarks.dlib.models import PREDICTOR_FILE, model_path  # noqa: E402


def sequences(root: Path) -> list[list[str]]:
    """Frame paths of every CK+-layout sequence under ``root``, sorted by sequence folder."""
    return [
        sorted(str(p) for p in folder.glob("*.png"))
        for folder in sorted((root / "cohn-kanade-images").glob("S*/*"))
        if folder.is_dir()
    ]


def naive_loop(frame_lists: list[list[str]], upsample: int) -> tuple[int, float, int]:
    """(frames, seconds, faces found) for the per-frame read-detect-predict-align loop."""
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


def whole_command(
    root: Path, workers: int, out: Path, overrides: list[str], config: Path = REPO / "configs" / "ckplus.yaml"
) -> tuple[float, dict, str]:
    """(seconds from process start to exit, summary.json, stderr) of one fresh `seqfer preprocess` run."""
    args = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "preprocess",
        str(config),
        "--set",
        f"data.root={root}",
        "--set",
        f"output_dir={out}",
        "--set",
        f"ray.workers={workers}",
        *[arg for kv in overrides for arg in ("--set", kv)],
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"seqfer preprocess failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "preprocess" / "summary.json").read_text())
    if summary["skipped"]:
        raise SystemExit("benchmark expected a fresh cache")
    return seconds, summary, done.stderr


def _times(fps: float, naive_fps: float) -> str:
    """``fps`` as a multiple of the naive loop's, or "-" when the naive loop did not run."""
    return f"{fps / naive_fps:.1f}x" if naive_fps == naive_fps else "-"


def tree_bytes(*paths: Path) -> int:
    """Apparent size in bytes of files and folders (what ``du -sb`` counts: every file and folder entry)."""
    total = 0
    for path in paths:
        for p in [path, *path.rglob("*")] if path.is_dir() else [path] if path.exists() else []:
            total += p.lstat().st_size
    return total


def folder_run(args: argparse.Namespace) -> None:
    """The whole command on a class-folder set (``--folder``): items/s, bytes written, breakdown, RSS."""
    root = args.folder.resolve()
    n_items = sum(1 for p in root.rglob("*") if p.is_file())
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="seqfer_bench_out_", dir=args.out_parent) as tmp:
        out = Path(tmp)
        overrides = ["data.format=imagefolder", f"data.name_pattern={args.name_pattern}", *args.overrides]
        seconds, summary, _stderr = whole_command(root, args.workers, out, overrides, args.config)
        written = tree_bytes(out)
    failed = summary.get("failed", 0)  # summary.json holds the count (RunSummary.as_dict)
    items = summary["done"] + (failed if isinstance(failed, int) else len(failed))
    rss = summary.get("peak_rss_mb", {"driver": 0.0, "workers": {}})
    print(f"\n{root}: {n_items} files, {tree_bytes(root) / 1e6:.1f} MB; load average before: {load_before:.2f}")
    print("\n| run | items | seconds | items/s | written MB | x input |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| `seqfer preprocess {args.config.name}`{''.join(' ' + kv for kv in args.overrides)}, "
        f"{args.workers} workers, "
        f"process start to exit | {items} | {seconds:.1f} | {items / seconds:.0f} | {written / 1e6:.1f} | "
        f"{written / tree_bytes(root):.1f}x |"
    )
    stages = summary.get("stage_seconds", {})
    total = sum(stages.values()) or 1.0
    print("worker time by stage: " + ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)" for k, v in stages.items()))
    print(f"driver: {summary.get('driver_seconds', {})}")
    workers = " / ".join(f"{v:.0f}" for v in rss["workers"].values())
    print(f"peak RSS MiB: driver {rss['driver']:.0f}, workers {workers}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="an existing demo set in the CK+ layout")
    ap.add_argument("--folder", type=Path, help="a class-folder set of one image per item (FER2013 train)")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "ck48.yaml", help="with --folder: the config")
    ap.add_argument("--name-pattern", default="^(?P<subject>.+)$", help="with --folder: data.name_pattern")
    ap.add_argument("--out-parent", type=Path, default=None, help="with --folder: where the output folder goes")
    ap.add_argument("--faces", type=Path, help="face photos with .pts files: generate the demo set from them first")
    ap.add_argument("--data", type=Path, help="with --faces: where the generated set goes (reused when present)")
    ap.add_argument("--subjects", type=int, default=40, help="with --faces: subjects (118 = CK+-sized)")
    ap.add_argument("--seed", type=int, default=1, help="with --faces: generator seed")
    ap.add_argument("--naive-sequences", type=int, default=20, help="sequences timed with the naive loop")
    ap.add_argument("--naive-upsample", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override for the whole command (A/B)"
    )
    args = ap.parse_args()
    if args.folder is not None:
        folder_run(args)
        return
    if (args.root is None) == (args.faces is None):
        ap.error("give exactly one of --root, --faces and --folder")
    root = args.root
    if args.faces is not None:
        root = args.data or Path(tempfile.mkdtemp(prefix="seqfer_bench_data_"))
        if not (root / "cohn-kanade-images").is_dir():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline.cli",
                    "demo-data",
                    str(root),
                    "--layout",
                    "ckplus",
                    "--subjects",
                    str(args.subjects),
                    "--seed",
                    str(args.seed),
                    "--faces",
                    str(args.faces),
                ],
                cwd=REPO,
                check=True,
            )
    seqs = sequences(root)
    if not seqs:
        raise SystemExit(f"no CK+-layout sequences under {root}")
    shape = cv2.imread(seqs[0][0], cv2.IMREAD_GRAYSCALE).shape

    n_naive, s_naive, found = naive_loop(seqs[: args.naive_sequences], args.naive_upsample)
    naive_fps = n_naive / s_naive if n_naive else float("nan")  # --naive-sequences 0: no ratios
    with tempfile.TemporaryDirectory(prefix="seqfer_bench_out_") as tmp:
        seconds, summary, _stderr = whole_command(root, args.workers, Path(tmp), args.overrides)
    frames = summary["frames processed"]
    fps = frames / seconds
    # .get: the script also times older versions of the command, whose summary lacks the breakdown
    driver = summary.get("driver_seconds", {})
    stages = summary.get("stage_seconds", {})
    rss = summary.get("peak_rss_mb", {"driver": 0.0, "workers": {}})

    print(
        f"\n{root}: {len(seqs)} sequences, {sum(map(len, seqs))} frames, {shape[1]}x{shape[0]}; "
        f"load average before: {os.getloadavg()[0]:.2f}\n"
    )
    print("| run | frames | seconds | frames/s | x naive |")
    print("| --- | ---: | ---: | ---: | ---: |")
    n_seq = len(seqs[: args.naive_sequences])
    print(
        f"| naive loop (detect every frame, upsample={args.naive_upsample}), first {n_seq} "
        f"sequences | {n_naive} | {s_naive:.1f} | {naive_fps:.1f} | {_times(naive_fps, naive_fps)} |"
    )
    print(
        f"| `seqfer preprocess`, {args.workers} workers{''.join(' ' + kv for kv in args.overrides)}, process start "
        f"to exit | {frames} | {seconds:.1f} | "
        f"{fps:.0f} | {_times(fps, naive_fps)} |"
    )
    to_summary = driver.get("startup", 0.0) + summary.get("seconds", 0.0)
    if to_summary > 0:
        print(
            f"\nto the written summary (the rest is Ray's own shutdown at exit): {to_summary:.1f} s = "
            f"{frames / to_summary:.0f} frames/s, {_times(frames / to_summary, naive_fps)} naive"
        )
    print(
        f"\nfirst sequence finished {driver.get('first_result', 0):.1f} s after process start (Ray start "
        f"{driver.get('ray_start', 0):.1f} s of it: "
        f"{driver.get('first_result', 0) - driver.get('ray_start', 0):.1f} s plus Ray's start); "
        f"start-up before preprocessing {driver.get('startup', 0):.1f} s, "
        f"manifest {driver.get('manifest', 0):.1f} s, dispatch {driver.get('dispatch', 0):.1f} s"
    )
    total = sum(stages.values()) or 1.0
    print(
        "worker time by stage (summed over workers): "
        + ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)" for k, v in stages.items())
    )
    workers_rss = " / ".join(f"{v:.0f}" for v in rss["workers"].values())
    print(f"peak RSS MiB: driver {rss['driver']:.0f}, workers {workers_rss}")
    if driver.get("worker_busy"):
        print(
            f"workers busy {driver['worker_busy']:.1f} s wall, {driver['worker_cpu']:.1f} s CPU "
            f"({100 * driver['worker_cpu'] / driver['worker_busy']:.0f}%: well below 100% = the workers waited "
            "for a core)"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
