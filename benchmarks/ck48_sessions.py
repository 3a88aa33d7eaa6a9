"""Which recording sessions each class of a CK+-named class-folder set comes from, and how bright the sides of
its crops are: the confound that made a model trained on CK+48 call a smile from another camera `contempt`.

    python benchmarks/ck48_sessions.py --root ../shared/real/CK+48 [--video ../shared/media/single_face.mp4]

Per class: sequences, subjects, subjects with no sequence of another class, subjects numbered S137 and up (CK+'s
later sessions, where contempt was added), and the mean brightness of the crop's outer 6 of 48 columns in units
of the crop's own standard deviation from its mean (what the network sees after per-sample normalisation:
negative = sides darker than the face). With --video, the same for the video's aligned crops, cut as the
config's preprocessing cuts them (resized to 48).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.data.manifest import prepare_manifest  # noqa: E402
from pipeline.predict.inputs import input_from_path  # noqa: E402
from pipeline.preprocess.to_stages import sequence_config  # noqa: E402
from stages.preprocess.sequence import SequenceProcessor  # noqa: E402

SIDE = 6  # of 48 columns
LATER_SESSIONS = 137  # subject number from which CK+'s later recordings start


def side_brightness(crop: np.ndarray) -> float:
    """Mean of the outer SIDE/48 columns of a grey crop resized to 48, in its own std from its own mean."""
    x = cv2.resize(np.asarray(crop, dtype=np.float32), (48, 48), interpolation=cv2.INTER_AREA)
    x = (x - x.mean()) / max(float(x.std()), 1e-6)
    return float(np.concatenate([x[:, :SIDE], x[:, -SIDE:]], axis=1).mean())


def class_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per class: sequences, subjects, single-class subjects, later-session subjects, side brightness."""
    classes_of = manifest.groupby("subject")["label"].nunique()
    rows = []
    for label, part in manifest.groupby("label"):
        subjects = sorted(set(part["subject"]))
        crops = [cv2.imread(f, cv2.IMREAD_GRAYSCALE) for paths in part["frame_paths"] for f in paths]
        sides = [side_brightness(c) for c in crops if c is not None]  # an unreadable file: left out
        rows.append(
            {
                "class": label,
                "sequences": len(part),
                "subjects": len(subjects),
                "only_this_class": int(sum(classes_of[s] == 1 for s in subjects)),
                f"S{LATER_SESSIONS}_and_up": int(sum(int(s.lstrip("S")) >= LATER_SESSIONS for s in subjects)),
                "side_brightness": round(float(np.mean(sides)), 2),
            }
        )
    return pd.DataFrame(rows)


def main(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, [f"data.root={args.root}", f"output_dir={args.out}"])
    manifest = prepare_manifest(cfg, quiet=True)[0]
    print(class_table(manifest).to_string(index=False))
    if args.video is not None:
        processor = SequenceProcessor(sequence_config(cfg), None)
        outcome = processor.process(input_from_path(args.video).source)
        if outcome.record is None:
            raise SystemExit(f"error: {args.video}: {outcome.status}: {outcome.reason}")
        rec = outcome.record
        sides = [side_brightness(rec.aligned[i]) for i in np.flatnonzero(rec.success)]
        print(f"{args.video}: {len(sides)} aligned frames, side_brightness {np.mean(sides):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the class-folder set (CK+48)")
    parser.add_argument("--config", type=Path, default=Path("configs/ck48.yaml"))
    parser.add_argument("--video", type=Path, default=None, help="a video to compare, cut by the config")
    parser.add_argument("--out", type=Path, default=Path("runs/ck48_sessions"), help="where the scan goes")
    main(parser.parse_args())
