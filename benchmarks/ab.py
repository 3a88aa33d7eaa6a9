"""Before and after on a noisy machine: one command, run alternately from an earlier commit and from this tree.

    python benchmarks/ab.py --base REV [--pairs 3] [--metric REGEX] -- COMMAND [ARGS...]
    python benchmarks/ab.py --base 2e49489 --pairs 3 --metric '\\| (\\d+\\.\\d+) \\| \\d+ \\| -' -- \\
        python benchmarks/bench_preprocess.py --root /work/data_heldout118 --naive-sequences 0
    python benchmarks/ab.py --base HEAD~1 -- python -m pipeline.cli evaluate fer2013 ../shared/real/FER2013 \\
        --format fer2013 --split val -o /tmp/ab_eval

The 2-core development machines change pace by 30-50 % from one run to the next (a neighbour on the same host, the
shared L3), more than most changes move a whole command. Only runs that alternate, before and after, in the same
minutes, compare. This script checks ``REV`` out in a temporary ``git worktree`` (removed at the end), then runs
``COMMAND`` there and here, ``--pairs`` times, base first.

Each run is a fresh process whose working folder is its tree, with ``PYTHONPATH`` set to that tree. So
``python benchmarks/X.py`` and ``python -m pipeline.cli ...`` run that tree's code, and so do Ray's workers
(``pipeline.runtime.ray_start`` puts the tree of the code that started Ray on their path). The installed ``seqfer``
console script always runs the installed tree: use ``python -m pipeline.cli`` instead. Write to absolute paths
(the trees differ); an output folder that the command refuses to replace is the command's to report.

Figures: the whole command's wall seconds; with ``--metric``, the first group of the regular expression's last match
in the command's output (stdout and stderr) instead. The table lists every run in order, with the load average
before it, then the median, min and max of each side. A failed run stops the script with its last output lines
(exit code 1).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    side: str  # "base" or "head"
    value: float
    seconds: float
    load: float


def run_once(
    command: Sequence[str], tree: Path, metric: re.Pattern | None, timeout: float | None
) -> tuple[float, float]:
    """(figure, wall seconds) of one run of ``command`` in ``tree``; SystemExit naming the tree when it fails or
    its output has no match for ``metric``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p)}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"error: {' '.join(command)} in {tree}: still running after {timeout:g} s") from None
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} in {tree} exited {done.returncode}:\n{output[-2000:]}")
    if metric is None:
        return seconds, seconds
    matches = metric.findall(output)
    if not matches:
        raise SystemExit(f"error: no match for --metric {metric.pattern!r} in the output of the run in {tree}")
    last = matches[-1]
    return float(last[0] if isinstance(last, tuple) else last), seconds


def alternate(
    command: Sequence[str],
    trees: dict[str, Path],
    pairs: int,
    metric: re.Pattern | None = None,
    timeout: float | None = None,
) -> list[Run]:
    """``pairs`` x (base, head) runs of ``command``, in that order, each printed as it ends."""
    runs = []
    for i in range(pairs):
        for side in ("base", "head"):
            load = os.getloadavg()[0]
            value, seconds = run_once(command, trees[side], metric, timeout)
            runs.append(Run(side, value, seconds, load))
            print(f"pair {i + 1}/{pairs} {side}: {value:g} ({seconds:.1f} s, load before {load:.2f})", flush=True)
    return runs


def table(runs: list[Run], unit: str) -> str:
    """Markdown: every run in order, then each side's median (min-max) and the head/base ratio of the medians."""
    lines = ["| run | side | " + unit + " | wall s | load before |", "| ---: | --- | ---: | ---: | ---: |"]
    lines += [f"| {i + 1} | {r.side} | {r.value:g} | {r.seconds:.1f} | {r.load:.2f} |" for i, r in enumerate(runs)]
    medians = {}
    lines += ["", "| side | median | min | max |", "| --- | ---: | ---: | ---: |"]
    for side in ("base", "head"):
        values = [r.value for r in runs if r.side == side]
        medians[side] = statistics.median(values)
        lines.append(f"| {side} | {medians[side]:g} | {min(values):g} | {max(values):g} |")
    if medians["base"]:
        lines += ["", f"head / base (medians): {medians['head'] / medians['base']:.3f}"]
    return "\n".join(lines)


def worktree(repo: Path, rev: str, parent: Path) -> Path:
    """A detached worktree of ``rev`` under ``parent``; SystemExit when git refuses (unknown revision...)."""
    path = parent / "base"
    done = subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(path), rev], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"error: git worktree add {rev}: {done.stderr.strip()}")
    return path


def remove_worktree(repo: Path, path: Path) -> None:
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True)
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    ap.add_argument("--pairs", type=int, default=3, help="base/head pairs to run (default 3)")
    ap.add_argument("--metric", help="regular expression; its first group (last match in the output) is the figure")
    ap.add_argument("--unit", default=None, help="the figure's name in the table (default: seconds or 'figure')")
    ap.add_argument("--timeout", type=float, default=None, help="seconds one run may take")
    ap.add_argument("--repo", type=Path, default=REPO, help="the repository (default: this one)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command, run in each tree")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.pairs < 1:
        ap.error("give --pairs >= 1 and a command after --")
    try:
        metric = re.compile(args.metric) if args.metric else None
    except re.error as exc:
        ap.error(f"--metric: {exc}")
    repo = args.repo.resolve()
    with tempfile.TemporaryDirectory(prefix="seqfer-ab-") as scratch:
        base = worktree(repo, args.base, Path(scratch))
        try:
            runs = alternate(command, {"base": base, "head": repo}, args.pairs, metric, args.timeout)
        finally:
            remove_worktree(repo, base)
    unit = args.unit or ("figure" if metric else "seconds")
    print(f"\n{' '.join(command)}\nbase {args.base} against the working tree of {repo}\n")
    print(table(runs, unit))


if __name__ == "__main__":
    main(sys.argv[1:])
