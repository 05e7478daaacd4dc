"""``ridecoop serve``: every role as its own child process, stopped together.

Each role is also a command of its own (``ridecoop api``), which is what a deployment
runs, one role per container; ``serve`` is the one-machine form.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

STOP_GRACE_S = 15.0


def _log(message: str) -> None:
    print(f'{{"event": "supervisor", "message": "{message}"}}', flush=True)


def supervise(roles: Sequence[str]) -> int:
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        for role in roles:
            children[role] = subprocess.Popen([sys.executable, "-m", "ridecoop", role])
            _log(f"started {role} (pid {children[role].pid})")
        while not stopping:
            for role, child in children.items():
                code = child.poll()
                if code is not None:
                    # One role down means the platform is not whole: stop the rest, so the
                    # process manager above us restarts everything together.
                    _log(f"{role} exited with {code}; stopping the others")
                    exit_code = code or 1
                    stopping = True
                    break
            time.sleep(0.2)
    finally:
        _stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _log("stopped")
    return exit_code


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for role, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _log(f"{role} did not stop in {STOP_GRACE_S}s; killing it")
            child.kill()
            child.wait()
