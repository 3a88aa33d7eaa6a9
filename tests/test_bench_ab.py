"""`benchmarks/ab.py`: the before/after runner runs each side's own code, alternating, and leaves no worktree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AB = REPO / "benchmarks" / "ab.py"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def two_commits(tmp_path: Path) -> Path:
    """A repository whose ``show.py`` prints ``value N`` from its own ``mod.py``: N = 1 at HEAD~1, 2 in the tree."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "show.py").write_text("import mod\nprint('value', mod.N)\n")
    for n in (1, 2):
        (repo / "mod.py").write_text(f"N = {n}\n")
        _git(repo, "add", ".")
        _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"N={n}")
    return repo


def _ab(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(AB), "--repo", str(repo), *args], capture_output=True, text=True, timeout=120
    )


def test_each_side_runs_its_own_code_alternately(two_commits: Path) -> None:
    done = _ab(
        two_commits, "--base", "HEAD~1", "--pairs", "2", "--metric", r"value (\d+)", "--", sys.executable, "show.py"
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("pair ")]
    assert [row.split(":")[0] for row in rows] == ["pair 1/2 base", "pair 1/2 head", "pair 2/2 base", "pair 2/2 head"]
    assert [float(row.split(": ")[1].split()[0]) for row in rows] == [1, 2, 1, 2]
    assert "| base | 1 | 1 | 1 |" in done.stdout and "| head | 2 | 2 | 2 |" in done.stdout
    assert "head / base (medians): 2.000" in done.stdout
    assert len(_git(two_commits, "worktree", "list").splitlines()) == 1  # the base's worktree is gone


def test_a_failing_run_stops_with_one_error_and_removes_the_worktree(two_commits: Path) -> None:
    (two_commits / "mod.py").write_text("raise ValueError('broken in the tree')\n")  # uncommitted: the head side
    done = _ab(two_commits, "--base", "HEAD~1", "--pairs", "1", "--", sys.executable, "show.py")
    assert done.returncode == 1
    assert "exited 1" in done.stderr and "broken in the tree" in done.stderr
    assert "Traceback" not in done.stderr.split("exited 1")[0]  # the script's own message, the run's output after it
    assert len(_git(two_commits, "worktree", "list").splitlines()) == 1


def test_an_unknown_revision_is_one_error_line(two_commits: Path) -> None:
    done = _ab(two_commits, "--base", "no-such-rev", "--", sys.executable, "show.py")
    assert done.returncode == 1
    assert done.stderr.startswith("error: git worktree add no-such-rev:")
