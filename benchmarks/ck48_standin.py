"""A stand-in of CK+48's full size for TIMING only: every image of a class-folder set twice, the copy under a
renamed subject (S010 -> S1010), as copies: the scanners resolve links and keep one entry per real file (a link
to a file already met is reported as a duplicate), so a stand-in made of links would be the half again.

    python benchmarks/ck48_standin.py --root ../shared/real/CK+48 --out runs/CK48x2
    /usr/bin/time -v seqfer run configs/ck48.yaml --set data.root=runs/CK48x2 --set output_dir=runs/ck48x2

With the 59-subject half this gives 118 subjects and 330 sequences, the full set's size (118, 327). Its accuracy
means nothing: a face and its copy are different "subjects", so they fall in different folds.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

SUBJECT = re.compile(r"^S(\d+)_")


def build(root: Path, out: Path) -> int:
    """Copy every ``CLASS/S<digits>_...`` image of ``root`` into ``out`` as itself and as ``S1<digits>_...``.
    Returns the number of files written; refuses an ``out`` that already holds files."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out}: exists and is not empty")
    n = 0
    for image in sorted(root.glob("*/*")):
        match = SUBJECT.match(image.name)
        if not image.is_file() or match is None:
            continue
        folder = out / image.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        for name in (image.name, SUBJECT.sub(f"S1{match.group(1)}_", image.name, count=1)):
            shutil.copyfile(image, folder / name)
            n += 1
    return n


def main(args: argparse.Namespace) -> None:
    n = build(args.root, args.out)
    print(f"{args.out}: {n} copies of the images of {args.root}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="a class-folder set such as CK+48")
    parser.add_argument("--out", type=Path, required=True)
    main(parser.parse_args())
