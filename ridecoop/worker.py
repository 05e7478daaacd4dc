"""``ridecoop worker``: runs jobs from the queue and the periodic jobs of every domain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from dispatch.channel import ride_events_published
from dispatch.tasks import DispatchTasks
from governance.tasks import GovernanceTasks
from infra.clock import Clock, SystemClock
from infra.db import create_engine, create_sessionmaker
from infra.jobs import Handler, JobConsumer
from infra.logging import configure_logging, get_logger
from infra.pubsub import after_publish
from infra.redis import create_redis
from infra.schedule import Periodic, claim
from infra.settings import Settings
from payments.stripe_gateway import StripeGateway
from payments.tasks import PaymentTasks

log = get_logger(__name__)


class Worker:
    def __init__(
        self,
        redis: Redis,
        handlers: Mapping[str, Handler],
        periodic: Sequence[Periodic],
        clock: Clock | None = None,
    ) -> None:
        self.redis = redis
        self.consumer = JobConsumer(redis, handlers)
        self.periodic = list(periodic)
        self.clock = clock or SystemClock()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run_periodic_once(self) -> int:
        ran = 0
        now = self.clock.now()
        for job in self.periodic:
            if await claim(self.redis, job, now):
                try:
                    await job.run(now)
                    ran += 1
                except Exception:
                    log.exception("periodic_job_failed", job=job.name)
        return ran

    async def run(self) -> None:
        await self.consumer.ensure_group()
        log.info("worker_started", consumer=self.consumer.consumer, periodic=len(self.periodic))
        while not self._stop.is_set():
            await self.run_periodic_once()
            try:
                await self.consumer.run_once(block_ms=1_000)
            except Exception:
                # Redis hiccups must not kill the worker; jobs are pending, not lost.
                log.exception("job_batch_failed")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=1.0)
        log.info("worker_stopped")


def install_stop_signals(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)


async def run_worker(settings: Settings) -> None:
    """The worker process: every domain's queued jobs and periodic jobs, until SIGTERM."""
    configure_logging(settings.core.log_level, settings.core.log_json)
    # Every domain's tables are mapped before the first flush (foreign keys cross domains).
    import ridecoop.models  # noqa: F401

    after_publish(ride_events_published)
    engine = create_engine(settings.database)
    redis = create_redis(settings.redis)
    gateway = StripeGateway(settings.stripe)
    clock = SystemClock()
    try:
        sessionmaker = create_sessionmaker(engine)
        payments = PaymentTasks(sessionmaker, gateway, redis, clock)
        dispatch = DispatchTasks(sessionmaker, payments.flows, redis, clock)
        governance = GovernanceTasks(sessionmaker, redis, clock, settings.governance)
        worker = Worker(
            redis,
            {**payments.handlers(), **governance.handlers()},
            [*payments.periodic(), *dispatch.periodic(), *governance.periodic()],
            clock,
        )
        install_stop_signals(worker)
        await worker.run()
    finally:
        await gateway.aclose()
        await redis.aclose()
        await engine.dispose()
