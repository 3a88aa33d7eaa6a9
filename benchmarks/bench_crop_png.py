"""What writing the aligned crops costs per frame, with the cache's PNG settings and with libpng's own filter choice.

    python benchmarks/bench_crop_png.py --root /work/data_heldout118 [--sequences 80] [--rounds 3]

One process, one thread: the first ``--sequences`` sequences of a CK+-layout set go through
``stages.preprocess.sequence.SequenceProcessor`` into a fresh cache, once per setting and round, the settings
alternating. Printed per setting: the ``cache_write`` stage's milliseconds per frame in each round (all three levels'
entries; the crops are most of it) and the bytes of the aligned level's entries per frame.

- ``Average filter``: what :mod:`stages.preprocess.cache_format` writes (PNG level 3, run-length matching, every row
  with the Average filter);
- ``libpng's choice``: the same without a chosen filter, so libpng tries every filter on every row (until
  2026-12-07).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

import stages.preprocess.cache_format as cache_format  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data.manifest import prepare_manifest  # noqa: E402
from pipeline.preprocess.to_stages import sequence_config, sources_from_manifest  # noqa: E402
from stages.preprocess.sequence import SequenceProcessor  # noqa: E402

BASE = [cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
SETTINGS = {"Average filter": None, "libpng's choice": BASE}  # None: the module's own parameters


def one_round(cfg, sources, params: list[int] | None, scratch: Path) -> tuple[float, float]:
    """(cache_write ms a frame, aligned-level bytes a frame) of ``sources`` into a fresh cache under ``scratch``."""
    cache_format._PNG_PARAMS = params
    cache = Path(tempfile.mkdtemp(dir=scratch))
    processor = SequenceProcessor(sequence_config(cfg), cache)
    processor.process(sources[0])  # models loaded, kernels compiled: not timed
    processor.times.take()
    for source in sources[1:]:
        processor.process(source)
    frames = sum(len(s.frame_paths) for s in sources[1:])
    aligned = sum(p.stat().st_size for p in (cache / "aligned").rglob("*") if p.is_file())
    return processor.times.take()["cache_write"] / frames * 1000, aligned / (frames + len(sources[0].frame_paths))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="a CK+-layout set (seqfer demo-data --layout ckplus)")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "ckplus.yaml")
    ap.add_argument("--sequences", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    cfg = load_config(args.config, [f"data.root={args.root}"])
    sources = sources_from_manifest(prepare_manifest(cfg, quiet=True)[0])[: args.sequences]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for name, params in SETTINGS.items():
                results[name].append(one_round(cfg, sources, params, Path(scratch)))
    print(f"{len(sources)} sequences of {args.root}, {args.rounds} rounds, alternating\n")
    print("| crops' PNG | cache write, ms a frame (each round) | aligned level, bytes a frame |")
    print("| --- | --- | ---: |")
    for name, rows in results.items():
        print(f"| {name} | {', '.join(f'{ms:.3f}' for ms, _ in rows)} | {rows[-1][1]:.0f} |")


if __name__ == "__main__":
    main()
