"""Run `seqfer compare` cells from prepared data on a machine that has no dataset (e.g. a GPU box).

Step 1, where the dataset and its cache are (writes OUTPUT_DIR/compare/data.npz, ~7 MB for CK+-sized)::

    python3 -m pipeline.cli compare CONFIG [--set ...] --models M1,M2 --prepare-only

Step 2, anywhere with the repository and that file (same CONFIG and --set values; device/parallelism settings
may differ)::

    python3 benchmarks/compare_prepared.py CONFIG --data OUTPUT_DIR/compare/data.npz [--set ...] \\
        [--models ...] [--streams ...] [--set cv.device=cuda --set ray.workers=8 --set cv.parallel=8] \\
        [--drop-checkpoints]

Unlike the CLI this does not check that dataset paths exist (the data comes from the file), uses Ray when it
is importable (folds of a cell in parallel) and trains in-process otherwise, and with ``--drop-checkpoints``
deletes the fold checkpoints of FINISHED cells afterwards (they are not needed to resume or to report, and
make the run folder large).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.compare.run import CELL_FILE, compare_dir, run_compare  # noqa: E402
from pipeline.config import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--data", required=True, type=Path, help="data.npz written by --prepare-only")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="dotted.key=value (repeatable)")
    ap.add_argument("--models", default=None)
    ap.add_argument("--streams", default=None)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--drop-checkpoints", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config, args.sets)
    use_ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    start = time.perf_counter()
    try:
        run_compare(cfg, args.models, args.streams, use_ray=use_ray, data_file=args.data)
    finally:
        if args.drop_checkpoints:
            for cell in compare_dir(cfg).iterdir():
                if (cell / CELL_FILE).is_file():
                    for f in cell.rglob("*.safetensors"):
                        f.unlink()
        print(f"compare_prepared: {time.perf_counter() - start:.0f} s, ray={use_ray}", file=sys.stderr)


if __name__ == "__main__":
    main()
