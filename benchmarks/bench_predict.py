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
    from pipeline.runtime.ray_pool import ensure_ray

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
    args = parser.parse_args()

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
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
