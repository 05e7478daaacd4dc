"""The command line as an operator uses it: real processes, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from infra.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RIDECOOP_DATABASE_URL=settings.database.async_url,
        RIDECOOP_REDIS_URL=str(settings.redis.url),
        RIDECOOP_AUTH_ARGON2_TIME_COST="1",
        RIDECOOP_AUTH_ARGON2_MEMORY_KIB="1024",
        **extra,
    )
    return env


@pytest.mark.slow
def test_serve_answers_readyz_and_stops_cleanly_on_ctrl_c(settings: Settings) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ridecoop", "serve"],
        env=_env(settings, RIDECOOP_API_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code
            except httpx.TransportError:
                time.sleep(0.2)
        assert status == 200
        # Ctrl-C in a terminal signals the whole process group.
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output.decode()
    assert b'"stopped"' in output
    assert b"started api" in output
    assert b"started worker" in output
    assert b"worker_stopped" in output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_bad_configuration_refuses_to_start(settings: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ridecoop", "api"],
        env=_env(settings, RIDECOOP_ENV="production"),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"placeholder" in result.stderr


def test_unknown_role_is_refused(settings: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ridecoop", "serve", "--roles", "api,teleporter"],
        env=_env(settings),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"teleporter" in result.stderr
