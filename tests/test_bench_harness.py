"""The benchmarks' scratch databases never outlive them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from bench.harness import plain_url

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# A pid that no process has: the highest the kernel hands out, plus one.
DEAD_PID = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1

SCRIPT = """
import sys, time
from bench.harness import scratch_database
with scratch_database("harness_test") as url:
    print(url.rsplit("/", 1)[1], flush=True)
    time.sleep(60)
"""


async def databases(server: str) -> set[str]:
    connection = await asyncpg.connect(plain_url(server) + "/postgres")
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'ridecoop_bench_%'"
        )
        return {row["datname"] for row in rows}
    finally:
        await connection.close()


def server_of(database_url: str) -> str:
    return database_url.rsplit("/", 1)[0]


async def test_a_benchmark_stopped_with_sigterm_drops_its_database(database_url: str) -> None:
    env = {**os.environ, "RIDECOOP_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    name = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
    assert name in await databases(server_of(database_url))

    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 128 + signal.SIGTERM

    assert name not in await databases(server_of(database_url))


async def test_a_database_left_by_a_benchmark_that_died_is_dropped_by_the_next(
    database_url: str,
) -> None:
    left = f"ridecoop_bench_killed_{DEAD_PID}"
    server = server_of(database_url)
    connection = await asyncpg.connect(plain_url(server) + "/postgres")
    try:
        await connection.execute(f'CREATE DATABASE "{left}"')
    finally:
        await connection.close()
    env = {**os.environ, "RIDECOOP_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT.replace("time.sleep(60)", "pass"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert left not in await databases(server)
