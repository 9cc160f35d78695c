"""The stage commands' processes: started here, and ended with the recipe that started them.

A recipe (run.sh, `make demo`) runs its stages as child processes, the demo three trainings at
once. Python's default answer to SIGTERM ends the parent at once and leaves the children
running: a `kill` or a `timeout` of the demo would leave three trainings writing their
experiments with nobody waiting for them, and a rerun would train into the same directories
beside them. Inside `ended_with_parent()`, SIGTERM ends the live children and then raises
SystemExit in the main thread, and leaving by any other exception ends them too: SIGTERM, which
a training answers by saving a checkpoint after its current step (s2s.train.trainer), then
SIGKILL for any that outlast the grace period. On Ctrl-C the terminal has already sent SIGINT
to the children (the same process group): they are given time to stop on their own before
SIGTERM, which a training would take as its second signal, an abort without the checkpoint.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

log = logging.getLogger("s2s.recipe")

_live: set[subprocess.Popen] = set()
_lock = threading.Lock()

STOP_GRACE_S = 60.0  # a training's step and checkpoint fit in this many times over
SIGINT_GRACE_S = 15.0  # for children that got the terminal's Ctrl-C themselves


def start(cmd: list[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen(cmd, **kwargs), remembered while it runs."""
    proc = subprocess.Popen(cmd, **kwargs)
    with _lock:
        _live.add(proc)
    return proc


def live() -> list[subprocess.Popen]:
    """The started processes still running (the ended ones are forgotten here)."""
    with _lock:
        _live.difference_update([p for p in _live if p.poll() is not None])
        return list(_live)


def _wait(procs: list[subprocess.Popen], seconds: float) -> list[subprocess.Popen]:
    """Waits up to `seconds` in all for `procs` to end; returns those still running."""
    deadline = time.monotonic() + seconds
    for proc in procs:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    return [p for p in procs if p.poll() is None]


def stop_all(interrupted: bool = False, grace: float = STOP_GRACE_S) -> None:
    """Ends every live child: SIGTERM, `grace` seconds, SIGKILL. interrupted (Ctrl-C): first
    wait SIGINT_GRACE_S for them to stop on the SIGINT they received too."""
    running = live()
    if interrupted and running:
        running = _wait(running, min(SIGINT_GRACE_S, grace))
    for proc in running:
        log.warning("stopping child process %d (%s)", proc.pid, " ".join(map(str, proc.args[:3])))
        proc.terminate()
    for proc in _wait(running, grace):
        log.warning("child process %d did not stop in %.0f s: killed", proc.pid, grace)
        proc.kill()
        proc.wait()


def _sigterm(signum: int, frame: object) -> None:
    # The children first, here: the exception would reach `ended_with_parent` only after
    # whatever it unwinds has finished, and a thread pool's exit joins threads that wait for
    # these very children.
    stop_all()
    raise SystemExit(128 + signum)


@contextmanager
def ended_with_parent() -> Iterator[None]:
    """SIGTERM stops the live children and raises SystemExit (installed from the main thread
    only), and leaving by any other exception stops them first too."""
    installed = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _sigterm) if installed else None
    try:
        yield
    except BaseException as e:
        stop_all(interrupted=isinstance(e, KeyboardInterrupt))
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, old)
