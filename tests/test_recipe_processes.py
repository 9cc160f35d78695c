"""A recipe's stage processes end with it (s2s.recipe.processes): a SIGTERM to the parent stops
its children gracefully, and Ctrl-C leaves them to stop on their own SIGINT first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# A child as a training behaves: the first SIGINT or SIGTERM is answered by a clean stop (here a
# line in its file naming the signal), after a moment's work.
CHILD = textwrap.dedent(
    """
    import signal, sys, time
    out = sys.argv[1]

    def stop(signum, frame):
        time.sleep(0.3)
        with open(out, "a") as f:
            f.write(signal.Signals(signum).name + "\\n")
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    with open(out, "a") as f:
        f.write("started\\n")
    time.sleep(120)
    """
)

# The parent as the demo runs its trainings: started from worker threads, the main thread
# waiting on the pool.
PARENT = textwrap.dedent(
    """
    import signal, sys
    from concurrent.futures import ThreadPoolExecutor
    from s2s.recipe import processes

    # Ctrl-C as in a terminal, even where the test runner started us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)

    child, outs = sys.argv[1], sys.argv[2:]

    def run(out):
        return processes.start([sys.executable, child, out]).wait()

    with processes.ended_with_parent():
        with ThreadPoolExecutor(max_workers=len(outs)) as pool:
            codes = list(pool.map(run, outs))
    """
)


def _start_parent(tmp_path: Path, n: int) -> tuple[subprocess.Popen, list[Path]]:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "parent.py").write_text(PARENT)
    outs = [tmp_path / f"child{i}.txt" for i in range(n)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py"), str(tmp_path / "child.py"), *map(str, outs)],
        env=env,
        start_new_session=True,  # its own process group: the Ctrl-C case signals just that
    )
    deadline = time.monotonic() + 60
    while not all(o.is_file() and "started" in o.read_text() for o in outs):
        assert time.monotonic() < deadline, "the children did not start"
        assert parent.poll() is None, "the parent ended early"
        time.sleep(0.05)
    return parent, outs


def _lines(outs: list[Path]) -> list[list[str]]:
    return [o.read_text().split() for o in outs]


def test_sigterm_to_the_parent_stops_its_children_gracefully(tmp_path):
    parent, outs = _start_parent(tmp_path, 2)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 128 + signal.SIGTERM
    # each child was asked once, with SIGTERM, and had the time to stop cleanly
    assert _lines(outs) == [["started", "SIGTERM"]] * 2


def test_ctrl_c_lets_the_children_stop_on_their_own_sigint(tmp_path):
    parent, outs = _start_parent(tmp_path, 2)
    os.killpg(parent.pid, signal.SIGINT)  # what a terminal sends to the foreground group
    assert parent.wait(timeout=60) != 0
    # no SIGTERM after the SIGINT: for a training that would be a second signal, an abort
    assert _lines(outs) == [["started", "SIGINT"]] * 2


@pytest.mark.parametrize("graceful", [True, False])
def test_stop_all_kills_what_outlasts_the_grace(tmp_path, graceful):
    from s2s.recipe import processes

    code = "import time; time.sleep(120)"
    if not graceful:  # ignores SIGTERM
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + code
    proc = processes.start([sys.executable, "-c", code])
    time.sleep(0.5)
    assert proc in processes.live()
    processes.stop_all(grace=2.0)
    assert proc.poll() == (-signal.SIGTERM if graceful else -signal.SIGKILL)
    assert proc not in processes.live()
