"""What a fresh install's first run pays before its first frame: compiling the numba kernels and converting dlib's
68-point model, step by step, in a new process with empty caches ("fresh") and again with the caches it filled
("warm").

    python benchmarks/bench_cold_start.py [--runs 2]

Each run is a child process with ``NUMBA_CACHE_DIR`` and ``SEQFER_CACHE_DIR`` pointed at new empty folders (fresh),
then a second child with the same folders (warm). The steps are what ``stages.preprocess.sequence.warm_up`` does, timed
one by
one: importing the compiled modules, the PNG kernel (``stages.preprocess.png.warm_up``), the model file's integer
decoder
(``model_format.tokenize`` on two bytes), the predictor kernel (``trees.warm_up_kernel``), the HOG detector
(``frontal_face_detector``) and the model (``load_tree_model``: parsed and converted when fresh, memory-mapped when
warm). Without the warm-up, every preprocessing worker of a fresh install pays these steps itself, at once.
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

REPO = Path(__file__).resolve().parents[1]
STEPS = ("import", "png kernel", "decoder", "predictor kernel", "hog detector", "model")


def child() -> None:
    """Print one JSON line: seconds per step."""
    seconds = {}
    t = time.perf_counter()

    def step(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[name] = now - t
        t = now

    import numpy as np

    from stages.preprocess import png
    from stages.preprocess.landmarks.dlib import converted, model_format, models, trees

    step("import")
    png.warm_up()
    step("png kernel")
    model_format.tokenize(np.array([1, 0], np.uint8), np.zeros(2, np.int32))
    step("decoder")
    trees.warm_up_kernel()
    step("predictor kernel")
    models.frontal_face_detector()
    step("hog detector")
    converted.load_tree_model(models.model_path(models.PREDICTOR_FILE))
    step("model")
    print(json.dumps(seconds))


def run_child(numba_dir: str, cache_dir: str) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": numba_dir, "SEQFER_CACHE_DIR": cache_dir, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="fresh/warm pairs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    rows = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="seqfer_cold_") as tmp:
            numba_dir, cache_dir = str(Path(tmp) / "numba"), str(Path(tmp) / "seqfer")
            rows.append(("fresh", run_child(numba_dir, cache_dir)))
            rows.append(("warm", run_child(numba_dir, cache_dir)))
    print(f"load average before: {os.getloadavg()[0]:.2f}\n")
    print("| run | " + " | ".join(STEPS) + " | total |")
    print("| --- |" + " ---: |" * (len(STEPS) + 1))
    for kind, seconds in rows:
        cells = " | ".join(f"{seconds[s]:.2f}" for s in STEPS)
        print(f"| {kind} | {cells} | {sum(seconds.values()):.2f} s |")


if __name__ == "__main__":
    main()
