"""``ridecoop dispatcher``: every window, each region's open requests matched to drivers.

A window (``Dispatcher.run_window``), for the regions this process holds:

1. Regions: those with rides in ``matching``. Each is matched by one dispatcher at a
   time, under a lease in Redis (``LiveState`` leases, TTL ``lease_ttl_s``, three windows
   by default). Every dispatcher announces itself (a heartbeat in a sorted set) and takes
   at most its share of the regions, ``ceil(regions / dispatchers alive)``, giving back
   what it holds beyond that, so two or more processes spread the regions, and the
   survivors take a dead one's regions once its leases and heartbeat lapse.
2. Per region, in one transaction: offers past their expiry become ``expired`` (their
   drivers excluded from the ride); the region's rides in ``matching`` without a live
   offer are the requests; the drivers are the live, available ones near them without a
   live offer or a ride under way; ``dispatch.matching.match`` decides; the chosen
   pairs become offers, each naming the id its decision will be stored under.
3. After the commit: offers are pushed to their drivers; then every decision with a
   candidate is stored with each candidate's costs (``match_decisions``) in a
   transaction of its own, so that nothing but the offers themselves stands between
   the decision and the drivers (a failure is tried again, then logged with the
   decisions in full; a dispatcher dying in those milliseconds loses that region's
   decisions, not its offers); then offers are put in the live state. Requests that
   waited ``no_driver_timeout_s`` become ``no_driver_found`` through the ride flows,
   which release the card hold, and the rider is told by the ride's event.

Drivers: with few requests against many drivers, each request asks Redis for its
nearest drivers (``nearest_available``, over every region its radius reaches); with
many, one scan of the regions' drivers (``drivers_in_region``) is cheaper. The switch is
at ``NEAREST_QUERY_WORTH_DRIVERS`` drivers scanned per request.

Fairness inputs: idle time is how long the driver has been available
(``LiveState.available_since``). Earnings today are the final fares of the driver's
rides completed since 00:00 UTC, from dispatch's own rides: a fare stands in for the
driver's share, which is a fixed split of it under one policy. Time online today comes
from ``driver_shifts``. The fairness weight is a governed parameter: each window reads
the value in force through ``fairness_weight`` (``run_dispatcher`` wires
:func:`governed_fairness_weight`, governance's ``dispatch.fairness_weight_s``).

Safety does not rest on the lease: a dispatcher that stalls past its lease while another
takes the region over can at worst compute a window twice; the unique indexes still let
each ride and each driver hold one live offer, and an accept is a compare-and-set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.flows import RideFlows
from dispatch.live import LiveDriver, LiveState, geo_key
from dispatch.matching import (
    AvailableDriver,
    EtaModel,
    MatchingParams,
    MatchResult,
    OpenRequest,
    Policy,
    match,
)
from dispatch.offers import MadeOffer, OfferService, PlannedOffer, forget, push, remember
from dispatch.regions import regions_near
from dispatch.repository import (
    FairnessRepository,
    MatchDecisionRepository,
    NewDecision,
    OfferRepository,
)
from dispatch.schemas import OfferRead, RideRead
from governance.service import FAIRNESS_KEY, GovernedParameterService
from infra.clock import Clock, SystemClock
from infra.db import create_engine, create_sessionmaker, transaction
from infra.errors import DomainError
from infra.events import EventBuffer
from infra.ids import new_id
from infra.logging import configure_logging, get_logger
from infra.pubsub import publish_events
from infra.redis import create_redis
from infra.settings import DispatchSettings, Settings
from payments.flows import PaymentFlows
from payments.stripe_gateway import StripeGateway

log = get_logger(__name__)

# Where dispatchers announce themselves: member = owner id, score = last window (Unix ms).
DISPATCHERS_KEY = "dispatch:dispatchers"
# Redis spends about 80-400 us on a nearest-drivers query (bench/dispatch_live.py) and
# about 6 us per driver when scanning a region (3 ms per 500): a request's query is worth
# scanning about this many drivers.
NEAREST_QUERY_WORTH_DRIVERS = 25
# Requests matched per region and window, oldest first; the rest wait for the next.
MAX_REQUESTS_PER_REGION = 5_000
# Drivers asked for per request beyond k: some nearby may hold another offer.
NEAREST_SPARE = 10
NEAREST_IN_FLIGHT = 8
# Candidates' figures are stored rounded: millimetres and milliseconds say nothing more.
_DECIMALS = 3
# Storing a window's decisions, after its offers went out: tries, and the pause before
# the next (times the attempt).
DECISION_ATTEMPTS = 3
DECISION_RETRY_S = 0.2


class NoDriverFound(Protocol):
    """Ends a ride no driver was found for (``dispatch.flows.RideFlows``)."""

    async def no_driver_found(self, ride_id: uuid.UUID) -> RideRead: ...


FairnessWeight = Callable[[datetime], Awaitable[float]]


@dataclass(frozen=True, slots=True)
class RegionReport:
    region: str
    requests: int
    drivers: int
    solver: str
    decisions: int
    offers: tuple[MadeOffer, ...]
    expired: tuple[OfferRead, ...]
    timed_out: tuple[uuid.UUID, ...]
    match_s: float
    # time.perf_counter() when the matcher returned, when the region's transaction had
    # committed, and when every offer had been pushed to its driver.
    matched_at: float
    committed_at: float
    pushed_at: float


@dataclass(frozen=True, slots=True)
class WindowReport:
    at: datetime
    owned: tuple[str, ...]
    acquired: tuple[str, ...]
    released: tuple[str, ...]
    regions: tuple[RegionReport, ...]
    no_driver_found: tuple[uuid.UUID, ...]
    duration_s: float

    @property
    def offers(self) -> list[MadeOffer]:
        return [offer for region in self.regions for offer in region.offers]

    @property
    def expired(self) -> list[OfferRead]:
        return [offer for region in self.regions for offer in region.expired]


class Dispatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        live: LiveState,
        clock: Clock,
        params: MatchingParams,
        owner_id: str,
        *,
        no_driver: NoDriverFound,
        policy: Policy = "batched",
        window_s: float = 2.0,
        lease_ttl_s: float | None = None,
        fairness_weight: FairnessWeight | None = None,
        eta: EtaModel | None = None,
        max_requests_per_region: int = MAX_REQUESTS_PER_REGION,
        nearest_query_worth_drivers: float = NEAREST_QUERY_WORTH_DRIVERS,
    ) -> None:
        if policy not in ("batched", "greedy"):
            raise ValueError(f"unknown policy {policy!r}")
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self.sessionmaker = sessionmaker
        self.live = live
        self.redis: Redis = live.redis
        self.clock = clock
        self.params = params
        self.owner_id = owner_id
        self.no_driver = no_driver
        self.policy: Policy = policy
        self.window_s = window_s
        self.lease_ttl_s = lease_ttl_s if lease_ttl_s is not None else 3 * window_s
        if not self.lease_ttl_s > window_s:
            raise ValueError("a lease must outlast a window")
        self.fairness_weight = fairness_weight
        self.eta = eta
        self.max_requests_per_region = max_requests_per_region
        self.nearest_query_worth_drivers = nearest_query_worth_drivers
        # The regions whose lease this dispatcher holds.
        self._owned: set[str] = set()
        self._stop = asyncio.Event()

    # The loop.

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Runs a window every ``window_s`` until ``stop()``; then gives its regions back."""
        log.info("dispatcher_started", owner=self.owner_id, policy=self.policy)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    report = await self.run_window(self.clock.now())
                    if report.regions or report.acquired or report.released:
                        log.info(
                            "dispatch_window",
                            owned=len(report.owned),
                            offers=len(report.offers),
                            expired=len(report.expired),
                            no_driver_found=len(report.no_driver_found),
                            duration_ms=round(report.duration_s * 1000, 1),
                        )
                except Exception:
                    # A database or Redis hiccup costs a window, not the process.
                    log.exception("dispatch_window_failed", owner=self.owner_id)
                elapsed = time.monotonic() - started
                if elapsed > self.window_s:
                    log.warning("dispatch_window_overran", duration_s=round(elapsed, 3))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), timeout=max(0.0, self.window_s - elapsed)
                    )
        finally:
            await self.release_all()
            log.info("dispatcher_stopped", owner=self.owner_id)

    async def run_window(self, now: datetime) -> WindowReport:
        """One window at ``now``: claims regions, then matches each one held."""
        started = time.perf_counter()
        dispatchers = await self._heartbeat(now)
        async with transaction(self.sessionmaker) as session:
            open_regions = await OfferRepository(session).open_regions()
        acquired, released = await self._claim(open_regions, dispatchers)
        params = await self._params(now)
        reports: list[RegionReport] = []
        for region in sorted(self._owned):
            try:
                reports.append(await self._match_region(region, now, params))
            except Exception:
                # One region's failure (its transaction rolled back) leaves the others'.
                log.exception("region_window_failed", region=region, owner=self.owner_id)
        ended: list[uuid.UUID] = []
        for report in reports:
            ended.extend(await self._no_driver_found(report.timed_out))
        return WindowReport(
            at=now,
            owned=tuple(sorted(self._owned)),
            acquired=tuple(sorted(acquired)),
            released=tuple(sorted(released)),
            regions=tuple(reports),
            no_driver_found=tuple(ended),
            duration_s=time.perf_counter() - started,
        )

    async def release_all(self) -> None:
        """Gives every region back and leaves the set of dispatchers, so the others take
        over at once instead of after the lease's TTL."""
        for region in sorted(self._owned):
            with contextlib.suppress(Exception):
                await self.live.release_lease(region, self.owner_id)
        self._owned.clear()
        with contextlib.suppress(Exception):
            await self.redis.zrem(DISPATCHERS_KEY, self.owner_id)

    # Regions and leases.

    async def _heartbeat(self, now: datetime) -> int:
        """Announces this dispatcher; returns how many are alive, this one included."""
        now_ms = int(now.timestamp() * 1000)
        alive_since = now_ms - int(self.lease_ttl_s * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(DISPATCHERS_KEY, {self.owner_id: now_ms})
            pipe.zremrangebyscore(DISPATCHERS_KEY, "-inf", f"({alive_since}")
            pipe.zcard(DISPATCHERS_KEY)
            _, _, alive = await pipe.execute()
        return max(1, int(alive))

    async def _claim(
        self, open_regions: Sequence[str], dispatchers: int
    ) -> tuple[set[str], set[str]]:
        share = math.ceil(len(open_regions) / dispatchers)
        wanted = set(open_regions)
        acquired: set[str] = set()
        released: set[str] = set()
        held = self._owned
        for region in sorted(held):
            if region not in wanted:
                # Nothing to match: let whoever sees new requests there first take it.
                await self.live.release_lease(region, self.owner_id)
                held.discard(region)
                released.add(region)
            elif not await self.live.renew_lease(region, self.owner_id, self.lease_ttl_s):
                log.warning("region_lease_lost", region=region, owner=self.owner_id)
                held.discard(region)
                released.add(region)
        # Beyond its share, a dispatcher gives regions back so a newcomer gets some.
        for region in sorted(held, key=self._preference, reverse=True)[: max(0, len(held) - share)]:
            await self.live.release_lease(region, self.owner_id)
            held.discard(region)
            released.add(region)
        for region in sorted(wanted - held, key=self._preference):
            if len(held) >= share:
                break
            if await self.live.acquire_lease(region, self.owner_id, self.lease_ttl_s):
                held.add(region)
                acquired.add(region)
        return acquired, released

    def _preference(self, region: str) -> bytes:
        # Each dispatcher prefers a different order of regions, so that racing for the
        # same free ones is rare.
        return hashlib.blake2b(f"{self.owner_id}|{region}".encode(), digest_size=8).digest()

    async def _params(self, now: datetime) -> MatchingParams:
        if self.fairness_weight is None:
            return self.params
        weight = await self.fairness_weight(now)
        if weight == self.params.fairness_weight_s:
            return self.params
        return dataclasses.replace(self.params, fairness_weight_s=weight)

    # One region.

    async def _match_region(
        self, region: str, now: datetime, params: MatchingParams
    ) -> RegionReport:
        events = EventBuffer()
        async with transaction(self.sessionmaker) as session:
            offers = OfferService(session, self.clock, self.live, events)
            expired = await offers.expire_due(now, [region])
            requests = await self._requests(session, offers, region)
            drivers = await self._drivers(session, requests, now, params)
            # Read before matching: from the decision on, only writes stand between the
            # drivers and their offers.
            details = await offers.details([request.id for request in requests])
            match_started = time.perf_counter()
            result = match(requests, drivers, params, now, self.policy, self.eta)
            matched_at = time.perf_counter()
            decision_ids, planned = _plan(result)
            made = await offers.create(planned, now, details)
        committed_at = time.perf_counter()
        await push(self.live, made)
        pushed_at = time.perf_counter()
        # Then the decisions behind them, before anything else can go wrong.
        decisions = _decisions(region, result, params, decision_ids)
        await self._store_decisions(region, decisions)
        await remember(self.live, made)
        await publish_events(self.redis, events.drain())
        await forget(self.live, expired)
        return RegionReport(
            region=region,
            requests=len(requests),
            drivers=len(drivers),
            solver=result.solver,
            decisions=len(decisions),
            offers=tuple(made),
            expired=tuple(expired),
            timed_out=result.timed_out_request_ids,
            match_s=matched_at - match_started,
            matched_at=matched_at,
            committed_at=committed_at,
            pushed_at=pushed_at,
        )

    async def _requests(
        self, session: AsyncSession, offers: OfferService, region: str
    ) -> list[OpenRequest]:
        requests = await offers.rides.open_requests(region, self.max_requests_per_region)
        holding = await offers.offers.rides_holding_offers([r.id for r in requests])
        return [r for r in requests if r.id not in holding]

    async def _drivers(
        self,
        session: AsyncSession,
        requests: Sequence[OpenRequest],
        now: datetime,
        params: MatchingParams,
    ) -> list[AvailableDriver]:
        """The live, available drivers within reach of the requests that hold no offer
        and have no ride under way, with their fairness inputs."""
        if not requests:
            return []
        reach: list[frozenset[str]] = []
        for request in requests:
            waited = max(0.0, (now - request.requested_at).total_seconds())
            reach.append(regions_near(request.lat, request.lng, params.radius_m(waited)))
        regions = sorted(set().union(*reach))
        async with self.redis.pipeline(transaction=False) as pipe:
            for region in regions:
                pipe.zcard(geo_key(region))
            scanned = sum(int(count) for count in await pipe.execute())
        if len(requests) * self.nearest_query_worth_drivers < scanned:
            found = await self._nearest(requests, reach, now, params)
        else:
            found = {}
            for region in regions:
                for driver in await self.live.drivers_in_region(region, now):
                    found[driver.driver_id] = driver
        offers = OfferRepository(session)
        ids = list(found)
        unavailable = await offers.drivers_holding_offers(ids)
        unavailable |= await offers.drivers_with_rides_under_way(ids)
        drivers = [driver for driver in found.values() if driver.driver_id not in unavailable]
        return await self._with_fairness(session, drivers, now, params)

    async def _nearest(
        self,
        requests: Sequence[OpenRequest],
        reach: Sequence[frozenset[str]],
        now: datetime,
        params: MatchingParams,
    ) -> dict[uuid.UUID, LiveDriver]:
        ids: set[uuid.UUID] = set()
        pending = iter(zip(requests, reach, strict=True))

        async def ask() -> None:
            for request, regions in pending:
                waited = max(0.0, (now - request.requested_at).total_seconds())
                nearby = await self.live.nearest_available(
                    regions,
                    request.lat,
                    request.lng,
                    radius_m=max(1.0, params.radius_m(waited)),
                    k=params.k + len(request.excluded_driver_ids) + NEAREST_SPARE,
                    now=now,
                )
                ids.update(driver.driver_id for driver in nearby)

        # A few queries in flight hide the round trips; Redis runs them one at a time.
        await asyncio.gather(*(ask() for _ in range(NEAREST_IN_FLIGHT)))
        positions = await self.live.positions(ids)
        return {
            driver_id: driver
            for driver_id, driver in positions.items()
            if driver.status == "available" and self.live.is_live(driver, now)
        }

    async def _with_fairness(
        self,
        session: AsyncSession,
        drivers: Sequence[LiveDriver],
        now: datetime,
        params: MatchingParams,
    ) -> list[AvailableDriver]:
        earnings: dict[uuid.UUID, int] = {}
        online: dict[uuid.UUID, float] = {}
        if drivers and self.policy == "batched" and params.fairness_weight_s > 0:
            day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
            ids = [driver.driver_id for driver in drivers]
            fairness = FairnessRepository(session)
            for driver_id, _currency, amount in await fairness.fares_by_driver(day_start, now, ids):
                earnings[driver_id] = earnings.get(driver_id, 0) + amount
            online = await fairness.online_seconds(day_start, now, now, ids)
        return [
            AvailableDriver(
                id=driver.driver_id,
                lat=driver.location.lat,
                lng=driver.location.lng,
                idle_since=driver.available_since or now,
                earnings_today_minor=earnings.get(driver.driver_id, 0),
                online_s_today=online.get(driver.driver_id, 0.0),
            )
            for driver in drivers
        ]

    async def _store_decisions(self, region: str, decisions: Sequence[NewDecision]) -> None:
        """Stores the window's decisions in a transaction of their own, after its offers
        went out; a failure is tried again, and if it persists the decisions are logged
        in full (an operator can load them from the log), never raised: the offers
        stand either way."""
        if not decisions:
            return
        for attempt in range(1, DECISION_ATTEMPTS + 1):
            try:
                async with transaction(self.sessionmaker) as session:
                    await MatchDecisionRepository(session).add_many(decisions)
                return
            except Exception:
                if attempt < DECISION_ATTEMPTS:
                    log.warning("decisions_not_stored_yet", region=region, attempt=attempt)
                    await asyncio.sleep(DECISION_RETRY_S * attempt)
                    continue
                log.exception(
                    "decisions_not_stored",
                    region=region,
                    decisions=[_decision_json(decision) for decision in decisions],
                )

    async def _no_driver_found(self, ride_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        ended = []
        for ride_id in ride_ids:
            try:
                await self.no_driver.no_driver_found(ride_id)
            except DomainError as exc:
                # Cancelled or assigned meanwhile: nothing left to give up on.
                log.info("no_driver_found_skipped", ride_id=str(ride_id), reason=exc.type)
                continue
            except Exception:
                log.exception("no_driver_found_failed", ride_id=str(ride_id))
                continue
            ended.append(ride_id)
        return ended


def _plan(result: MatchResult) -> tuple[dict[uuid.UUID, uuid.UUID], list[PlannedOffer]]:
    """The id each decision with a candidate will be stored under (by request), and the
    offers the chosen pairs become, each naming its decision."""
    ids: dict[uuid.UUID, uuid.UUID] = {}
    planned: list[PlannedOffer] = []
    for decision in result.decisions:
        if not decision.candidates:
            continue
        decision_id = ids[decision.request_id] = new_id()
        if decision.chosen is not None:
            planned.append(
                PlannedOffer(
                    ride_id=decision.request_id,
                    driver_id=decision.chosen.driver_id,
                    decision_id=decision_id,
                    pickup_eta_s=decision.chosen.eta_s,
                )
            )
    return ids, planned


def _decisions(
    region: str,
    result: MatchResult,
    params: MatchingParams,
    ids: Mapping[uuid.UUID, uuid.UUID],
) -> list[NewDecision]:
    """Every decision that had a candidate, as stored: each candidate's costs, and the
    parameters it was decided under."""
    stored_params = _params_json(params, result)
    return [
        NewDecision(
            id=ids[decision.request_id],
            ride_id=decision.request_id,
            region=region,
            policy=decision.policy,
            window_at=decision.decided_at,
            chosen_driver_id=decision.driver_id,
            candidates=[
                {
                    "driver_id": str(candidate.driver_id),
                    "distance_m": round(candidate.distance_m, _DECIMALS),
                    "eta_s": round(candidate.eta_s, _DECIMALS),
                    "fairness_bonus_s": round(candidate.fairness_bonus_s, _DECIMALS),
                    "cost": round(candidate.cost, _DECIMALS),
                }
                for candidate in decision.candidates
            ],
            params={
                **stored_params,
                "waited_s": round(decision.waited_s, _DECIMALS),
                "radius_m": round(decision.radius_m, _DECIMALS),
            },
        )
        for decision in result.decisions
        if decision.candidates
    ]


def _decision_json(decision: NewDecision) -> dict[str, Any]:
    return {
        "id": str(decision.id),
        "ride_id": str(decision.ride_id),
        "region": decision.region,
        "policy": decision.policy,
        "window_at": decision.window_at.isoformat(),
        "chosen_driver_id": str(decision.chosen_driver_id) if decision.chosen_driver_id else None,
        "candidates": decision.candidates,
        "params": decision.params,
    }


def _params_json(params: MatchingParams, result: MatchResult) -> dict[str, Any]:
    values: dict[str, Any] = dataclasses.asdict(params)
    values["solver"] = result.solver
    return values


def owner_id() -> str:
    """A dispatcher's name in leases: host, process and a random part (a restarted
    process with the same pid must not inherit leases it no longer serves)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def install_stop_signals(dispatcher: Dispatcher) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, dispatcher.stop)


# The process.


def matching_params(settings: DispatchSettings) -> MatchingParams:
    """The configured matching parameters; the fairness weight is governed instead (see
    :func:`governed_fairness_weight`)."""
    return MatchingParams(
        k=settings.k,
        base_radius_m=settings.base_radius_m,
        radius_growth_m_per_s=settings.radius_growth_m_per_s,
        max_radius_m=settings.max_radius_m,
        no_driver_timeout_s=settings.no_driver_timeout_s,
    )


def governed_fairness_weight(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> FairnessWeight:
    """The members' fairness weight in force at a window's time: the value of the last
    vote on ``dispatch.fairness_weight_s``, or the constitution's founding default."""

    async def weight(now: datetime) -> float:
        async with transaction(sessionmaker) as session:
            value = await GovernedParameterService(session).value_at(FAIRNESS_KEY, now)
        return float(value)

    return weight


async def run_dispatcher(settings: Settings) -> None:
    """The dispatcher process: windows until SIGTERM or SIGINT, then its regions go back."""
    configure_logging(settings.core.log_level, settings.core.log_json)
    config = settings.dispatch
    engine = create_engine(settings.database)
    redis = create_redis(settings.redis)
    gateway = StripeGateway(settings.stripe)
    clock = SystemClock()
    try:
        sessionmaker = create_sessionmaker(engine)
        live = LiveState(redis, liveness_s=config.liveness_s, offer_ttl_s=config.offer_ttl_s)
        payments = PaymentFlows(sessionmaker, gateway, clock)
        dispatcher = Dispatcher(
            sessionmaker,
            live,
            clock,
            matching_params(config),
            owner_id(),
            no_driver=RideFlows(sessionmaker, payments, clock, redis),
            policy=config.policy,
            window_s=config.window_s,
            fairness_weight=governed_fairness_weight(sessionmaker),
            lease_ttl_s=config.lease_ttl_s,
            max_requests_per_region=config.max_requests_per_region,
        )
        install_stop_signals(dispatcher)
        # What start-up loaded lives as long as the process: out of the collector's
        # sight, a full collection no longer walks it, and stalls a window less.
        gc.collect()
        gc.freeze()
        await dispatcher.run()
    finally:
        await gateway.aclose()
        await redis.aclose()
        await engine.dispose()
