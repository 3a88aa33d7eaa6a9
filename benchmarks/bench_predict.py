"""Prediction speed: latency for one real video (cold and warm) and batch throughput on Ray.

    python benchmarks/bench_predict.py --model runs/demo/model --video ../shared/media/single_face.mp4 \
        --videos 200 --workers 2

- cold: wall time of ``python -m pipeline.cli predict MODEL VIDEO -o OUT`` in a fresh process (process start,
  imports, model and landmarker loading, decode, landmarks, align, trajectory, network, writing the CSV);
  median of ``--cold-runs``.
- warm: ``Predictor.predict(VIDEO)`` with the model and the landmarker already loaded and no cache (every call
  decodes and tracks the whole video again); median and min of ``--warm-runs`` after one untimed call.
- throughput: ``run_predict`` over the first ``--videos`` of a generated demo set (``videos`` layout, CK+-like
  10-30 frames, generated once into ``--data`` and reused) with ``--workers`` Ray actors and no cache. Ray
  start-up is timed separately; actor start-up (loading the model, building dlib) is inside the batch time.

Without ``--model`` an untrained model with the default config is written to a temporary folder: the network's
speed does not depend on its weights.

Many single images, whole command (``--images``; the video figures above are then skipped):

    python benchmarks/bench_predict.py --model MODEL --images DIR [--limit N] [--repo OLD_CHECKOUT --repo .] \
        [--runs 2] [--evaluate ../shared/real/FER2013 --eval-format fer2013 --eval-split val --eval-classes basic7]

- images: ``python -m pipeline.cli predict MODEL LIST -o OUT`` in a fresh process, LIST a .txt list of the first
  ``--limit`` images under DIR (every image found there, recursively, when 0), each its own input; wall seconds
  from process start to exit (Ray's start included), inputs/s, the CPU seconds of the whole process tree (driver,
  Ray's processes, workers: sampled from /proc every 0.2 s, so a rough figure that does not depend on the load of
  a shared machine) and the tree's peak resident memory, driver and largest worker apart.
- evaluate: the same figures for ``python -m pipeline.cli evaluate MODEL ROOT --format F [--split S]
  [--classes C] -o OUT``.
- ``--repo``: run the commands of each checkout given (repeatable; default this one), back to back and
  ``--runs`` times in turn, so that a before/after comparison sees the same machine load. The load average
  (``os.getloadavg``) is printed before and after each run.
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

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.model_folder.folder import write_model_folder  # noqa: E402
from pipeline.predict.predictor import Predictor  # noqa: E402
from stages.atomic_io import atomic_write_text  # noqa: E402


def default_model(folder: Path) -> Path:
    """An untrained model with the default config (7 CK+ classes)."""
    import torch

    from stages.learning.models import build_model, in_channels_for

    cfg = load_config(None)
    torch.manual_seed(0)
    model = build_model(cfg.model, 7, in_channels_for(cfg.model.input, False), cfg.preprocess.trajectory.length)
    classes = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
    return write_model_folder(folder / "model", model.eval(), cfg, classes, {"trained_at": "untrained (benchmark)"})


def cold(model: Path, video: Path, runs: int, out_dir: Path) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    times = []
    for i in range(runs):
        out = out_dir / f"cold_{i}.csv"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "predict", str(model), str(video), "-o", str(out)],
            check=True,
            env=env,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
        (out.with_name(out.name + ".resume.jsonl")).unlink()  # the next run must not resume
    return times


def warm(model: Path, video: Path, runs: int) -> tuple[list[float], dict]:
    predictor = Predictor.load(model)
    first = predictor.predict(video)
    assert first.status == "ok", first.reason
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = predictor.predict(video)
        times.append(time.perf_counter() - start)
    return times, {"status": result.status, "label": result.label, "n_frames": result.n_frames}


def throughput(model: Path, data: Path, n_videos: int, workers: int, out_dir: Path) -> dict:
    import pandas as pd

    from data_manifests.demo import generate_demo
    from pipeline.config import RayConfig
    from pipeline.predict.run import run_predict
    from pipeline.runtime.ray_start import ensure_ray

    t0 = time.perf_counter()
    generate_demo(
        data,
        layout="videos",
        n_subjects=max(1, round(n_videos * 118 / 327)),
        n_sequences=n_videos + n_videos // 10 + 2,
        seed=0,
        workers=workers,
    )
    generated = time.perf_counter() - t0
    videos = [str(data / p) for p in pd.read_csv(data / "labels.csv")["path"]][:n_videos]  # mp4, avi, mov
    t0 = time.perf_counter()
    ensure_ray(RayConfig(workers=workers))
    ray_start = time.perf_counter() - t0
    out = out_dir / "batch.csv"
    t0 = time.perf_counter()
    n_failed = run_predict(model, videos, output=out, overrides=[f"ray.workers={workers}"])
    seconds = time.perf_counter() - t0
    rows = pd.read_csv(out)
    frames = int(rows["n_frames"].sum())
    return {
        "videos": len(videos),
        "failed": n_failed,
        "frames": frames,
        "workers": workers,
        "seconds": round(seconds, 2),
        "ray_start_seconds": round(ray_start, 2),
        "videos_per_s": round(len(videos) / seconds, 2),
        "frames_per_s": round(frames / seconds, 1),
        "generate_seconds": round(generated, 1),
    }


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def _tree_sample(root: int, cpu: dict[int, float], peak: dict[str, int]) -> None:
    """Add one /proc sample of ``root``'s process tree: CPU seconds per pid (latest), peak RSS of the tree, the
    driver and the largest other process."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    parent, stats = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        stats[pid] = ((int(fields[11]) + int(fields[12])) / tick, int(fields[21]) * page)
    tree, frontier = {root}, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        for child in children.get(frontier.pop(), []):
            tree.add(child)
            frontier.append(child)
    total = 0
    for pid in tree & stats.keys():
        cpu[pid] = stats[pid][0]
        total += stats[pid][1]
        key = "driver" if pid == root else "other"
        peak[key] = max(peak.get(key, 0), stats[pid][1])
    peak["tree"] = max(peak.get("tree", 0), total)


def measured_command(args: list[str], repo: Path) -> dict:
    """Run ``args`` in ``repo`` (a checkout of this project): wall seconds from start to exit, exit code, CPU
    seconds of its process tree, peak RSS (MiB) of the tree, the driver and the largest other process."""
    import threading

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    cpu: dict[int, float] = {}
    peak: dict[str, int] = {}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            _tree_sample(proc.pid, cpu, peak)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = proc.communicate()[1]
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    mib = 1024 * 1024
    return {
        "seconds": round(seconds, 2),
        "exit_code": proc.returncode,
        "cpu_seconds": round(sum(cpu.values()), 1),
        "peak_rss_mib": {k: round(v / mib) for k, v in peak.items()},
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "stderr_tail": stderr.strip().splitlines()[-3:],
    }


def image_list(folder: Path, limit: int, out: Path) -> int:
    """Write the first ``limit`` images under ``folder`` (all when 0, sorted by path) to the list file ``out``."""
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    images = images[:limit] if limit else images
    atomic_write_text(out, "".join(f"{p.absolute()}\n" for p in images))
    return len(images)


def images_benchmark(args: argparse.Namespace, model: Path, tmp: Path) -> list[dict]:
    """The whole-command figures of every ``--repo`` (see the module doc), ``--runs`` rounds in turn."""
    listing = tmp / "images.txt"
    n_images = image_list(args.images, args.limit, listing)
    repos = [Path(r).absolute() for r in (args.repo or [REPO])]
    figures = []
    for run in range(args.runs):
        for i, repo in enumerate(repos):
            out = tmp / f"predict_{run}_{i}.csv"
            cmd = [sys.executable, "-m", "pipeline.cli", "predict", str(model), str(listing), "-o", str(out)]
            cmd += ["--set", f"ray.workers={args.workers}"]
            fig = {
                "repo": str(repo),
                "run": run,
                "command": "predict",
                "inputs": n_images,
                **measured_command(cmd, repo),
            }
            fig["inputs_per_s"] = round(n_images / fig["seconds"], 1)
            figures.append(fig)
            print(json.dumps(fig), flush=True)
            if args.evaluate:
                out_dir = tmp / f"evaluate_{run}_{i}"
                cmd = [sys.executable, "-m", "pipeline.cli", "evaluate", str(model), str(args.evaluate.absolute())]
                cmd += ["--format", args.eval_format, "-o", str(out_dir), "--set", f"ray.workers={args.workers}"]
                cmd += ["--split", args.eval_split] if args.eval_split else []
                cmd += ["--classes", args.eval_classes] if args.eval_classes else []
                fig = {"repo": str(repo), "run": run, "command": "evaluate", **measured_command(cmd, repo)}
                metrics = out_dir / "metrics.json"
                if metrics.is_file():
                    scored = json.loads(metrics.read_text())
                    n_inputs = scored["n_scored"] + scored.get("n_failed", 0)
                    fig.update(inputs=n_inputs, inputs_per_s=round(n_inputs / fig["seconds"], 1))
                figures.append(fig)
                print(json.dumps(fig), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder or CV run folder (default: untrained default)")
    parser.add_argument("--video", type=Path, default=REPO.parent / "shared" / "media" / "single_face.mp4")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--warm-runs", type=int, default=10)
    parser.add_argument("--videos", type=int, default=200, help="batch size for throughput (0: skip)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "seqfer_bench_videos")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--images", type=Path, help="folder of single images: whole-command figures only")
    parser.add_argument("--limit", type=int, default=0, help="first N images of --images (0: all)")
    parser.add_argument("--repo", action="append", help="checkout whose command to run (repeatable)")
    parser.add_argument("--runs", type=int, default=1, help="rounds over the --repo checkouts")
    parser.add_argument("--evaluate", type=Path, help="dataset root for `seqfer evaluate` (with --images)")
    parser.add_argument("--eval-format", default="fer2013")
    parser.add_argument("--eval-split", default=None)
    parser.add_argument("--eval-classes", default=None)
    args = parser.parse_args()
    if args.images:
        with tempfile.TemporaryDirectory() as tmp:
            model = args.model.absolute() if args.model else default_model(Path(tmp))
            report = {"model": str(args.model or "untrained default config"), "cpus": os.cpu_count()}
            report["runs"] = images_benchmark(args, model, Path(tmp))
        print(json.dumps(report, indent=2))
        if args.json:
            atomic_write_text(args.json, json.dumps(report, indent=2))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = args.model or default_model(tmp_path)
        report: dict = {
            "model": str(args.model or "untrained default config"),
            "video": str(args.video),
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
        }
        if args.cold_runs:
            times = cold(model, args.video, args.cold_runs, tmp_path)
            report["cold_s"] = {"median": round(float(np.median(times)), 3), "runs": [round(t, 3) for t in times]}
        if args.warm_runs:
            times, info = warm(model, args.video, args.warm_runs)
            report["warm_s"] = {
                "median": round(float(np.median(times)), 3),
                "min": round(min(times), 3),
                "runs": len(times),
                **info,
            }
        if args.videos:
            report["throughput"] = throughput(model, args.data, args.videos, args.workers, tmp_path)
        report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
