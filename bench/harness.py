"""What every benchmark shares: progress lines, a scratch database, the machine's
description, and results files that several benchmarks may add keys to."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from infra.deploy.services import pid_alive
from infra.migrations import upgrade
from infra.settings import DatabaseSettings

RESULTS_DIR = Path(__file__).parent / "results"


def progress(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def plain_url(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


async def admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(plain_url(server_url) + "/postgres")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _terminated(signum: int, frame: object) -> None:
    # SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C, so the database is dropped.
    raise SystemExit(128 + signum)


async def _drop_abandoned(server_url: str) -> None:
    """Drops the scratch databases of benchmarks that died without cleaning up (SIGKILL):
    their name ends with the pid of a process that no longer exists."""
    connection = await asyncpg.connect(plain_url(server_url) + "/postgres")
    try:
        names = [
            row["datname"]
            for row in await connection.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'ridecoop_bench_%'"
            )
        ]
        for name in names:
            pid = name.rsplit("_", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                progress(f"dropping {name}, left by a benchmark that died")
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@contextmanager
def scratch_database(label: str) -> Iterator[str]:
    """A migrated database of its own on the configured server, dropped afterwards, also
    when the benchmark is stopped with SIGTERM."""
    server = DatabaseSettings().async_url.rsplit("/", 1)[0]
    name = f"ridecoop_bench_{label}_{os.getpid()}"
    asyncio.run(_drop_abandoned(server))
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    progress(f"creating scratch database {name}")
    asyncio.run(admin(server, f'CREATE DATABASE "{name}"'))
    try:
        progress("migrating")
        upgrade(f"{server}/{name}")
        yield f"{server}/{name}"
    finally:
        progress(f"dropping {name}")
        asyncio.run(admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def machine(postgresql: str | None = None) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.M)
        cpu = models[0] if models else cpu
    memory_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        found = re.search(r"^MemTotal:\s+(\d+) kB", meminfo.read_text(), flags=re.M)
        memory_gb = round(int(found.group(1)) / 1024 / 1024, 1) if found else None
    described: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    if postgresql is not None:
        described["postgresql"] = postgresql
    return described


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def merge_results(name: str, section: str, values: dict[str, Any]) -> Path:
    """Writes ``values`` under ``section`` of bench/results/<name>.json, keeping the other
    sections, so benchmarks that share a file do not erase each other."""
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    current[section] = values
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path
