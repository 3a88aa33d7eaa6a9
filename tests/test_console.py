"""pipeline.console.end_process: the quick end of the `seqfer` process must still do what the interpreter's exit
does before it frees its modules (the CLI's own contract, exit codes and error lines, is tests/test_cli.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import atexit, concurrent.futures, sys, threading, time
    sys.path.insert(0, {repo!r})
    from pipeline.console import end_process

    POOL = concurrent.futures.ThreadPoolExecutor(2)  # never shut down: its threads wait for the exit's hook
    POOL.submit(lambda: 1).result()

    def late() -> None:
        time.sleep(0.5)
        print("thread finished", flush=True)

    threading.Thread(target=late).start()  # not a daemon: the exit waits for it
    atexit.register(lambda: print("exit handler ran"))  # buffered: the final flush must write it
    print("command done", end="\\n")
    end_process(3)
    """
)


def test_end_process_waits_for_threads_stops_executors_runs_exit_handlers_and_flushes(tmp_path: Path) -> None:
    script = tmp_path / "ending.py"
    script.write_text(SCRIPT.format(repo=str(REPO)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )  # joining the executor's threads without the interpreter's hooks would hang here (timeout)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["command done", "thread finished", "exit handler ran"], done.stdout
    assert done.stderr == ""
