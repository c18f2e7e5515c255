"""``taskflow worker``'s supervisor: the command runs the worker as its child process and
replaces it when it dies (a crash, the OOM killer, ``os._exit`` in a body) or wedges (its
event loop blocked past a running job's timeout, as the child's link says, see
``taskflow._worker.supervised``; or the child silent for a minute). SIGTERM and SIGINT are
passed on to the child, whose exit status becomes the command's.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

from .._worker.supervised import SUPERVISOR_FD_ENV

__all__ = ("Supervisor",)

logger = logging.getLogger("taskflow.supervisor")

_BACKOFF_FIRST = 1.0
_BACKOFF_CAP = 30.0
_STABLE = 60.0  # a child that lived this long resets the restart backoff
# exit statuses that are answers, not deaths: 0 stopped (a signal sent to it directly), and
# for the first child 2, it refused to start (a bad option or app, Redis unreachable or
# refusing): starting it again would fail alike
_SILENCE = 60.0  # seconds without a line from a child whose link had spoken: wedged


class Supervisor:
    """Runs ``argv`` as a supervised child until it exits on its own or by a signal."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.restarts = 0

    def run(self) -> int:
        """Supervise until the child ends for good; its exit status (128+N for signal N)."""
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._loop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def _loop(self) -> int:
        backoff = _BACKOFF_FIRST
        while True:
            started = time.monotonic()
            code, wedged = self._run_child()
            # 2 (refused to start) is final for the first child only: a later one may meet
            # a Redis outage, which passes
            final = code == 0 or (code == 2 and self.restarts == 0)
            if self.stopping or (final and not wedged):
                return code if code >= 0 else 128 - code
            if time.monotonic() - started >= _STABLE:
                backoff = _BACKOFF_FIRST
            why = "was killed: wedged" if wedged else f"exited with status {code}"
            logger.warning("worker process %s; starting a new one in %gs", why, backoff)
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.05)
            if self.stopping:
                return code if code >= 0 else 128 - code
            backoff = min(backoff * 2, _BACKOFF_CAP)
            self.restarts += 1

    def _run_child(self) -> tuple[int, bool]:
        read_fd, write_fd = os.pipe()
        try:
            self.child = subprocess.Popen(
                self.argv,
                env={**self.env, SUPERVISOR_FD_ENV: str(write_fd)},
                pass_fds=(write_fd,),
                start_new_session=True,  # a terminal's Ctrl-C reaches it once, through here
            )
        finally:
            os.close(write_fd)
        logger.info("worker process %d started (supervised by %d)", self.child.pid, os.getpid())
        if self.stopping:  # a signal came while it was being started
            self.child.send_signal(signal.SIGTERM)
        try:
            return self._watch(self.child, read_fd)
        finally:
            os.close(read_fd)

    def _watch(self, child: subprocess.Popen[bytes], fd: int) -> tuple[int, bool]:
        heard = time.monotonic()
        spoke = False  # the child's link has written a line (it is up)
        listening = True  # until the pipe's end: then silence decides
        buffered = b""
        while True:
            code = child.poll()
            if code is not None:
                return code, False
            try:
                ready, _, _ = select.select([fd] if listening else [], [], [], 0.25)
            except InterruptedError:  # a signal: handled, go on
                continue
            why = None
            chunk = os.read(fd, 4096) if ready else b""
            if ready and not chunk:
                listening = False  # the child closed its end
            if chunk:
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                if lines:
                    heard, spoke = time.monotonic(), True
                    last = lines[-1].decode(errors="replace")
                    why = last.partition(" ")[2] if last.startswith("wedged") else None
            elif spoke and time.monotonic() - heard > _SILENCE:
                why = f"it has said nothing for {_SILENCE:g}s (blocked even its threads)"
            if why is not None:
                logger.error("worker process %d is wedged: %s; killing it", child.pid, why)
                child.kill()
                child.wait()
                return child.returncode, True


def child_argv(command: Sequence[str]) -> list[str]:
    """The argv that runs ``taskflow <command>`` with this Python."""
    return [sys.executable, "-m", "taskflow", *command]
