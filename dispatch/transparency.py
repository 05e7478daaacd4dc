"""Why an offer went where it went, and how evenly work and pay are spread.

A driver reads the decisions they were a candidate in, each as their own cost against
the winner's (``dispatch.matching.explain``); the winner's identity never leaves the
table. Members read, per day, the Gini coefficient of earnings per hour online and of
offers per hour online across the drivers who were online that day.

Figures: earnings are the final fares of rides completed that day (UTC), from dispatch's
rides, in the day's main currency (the one most of them were in; a co-op prices in one);
time online is the drivers' shifts cut to the day. A driver with no shift that day is not
counted, whatever they earned: without hours there is no rate.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from dispatch import matching
from dispatch.errors import MatchDecisionNotFound
from dispatch.models import MatchDecision
from dispatch.repository import FairnessRepository, MatchDecisionRepository, OfferRepository
from dispatch.schemas import CostRead, FairnessRead, MatchExplanationRead
from infra.clock import Clock

# How far back a driver's list of decisions reaches, and how long it may be.
EXPLANATION_DAYS = 7
MAX_EXPLANATIONS = 100
LORENZ_POINTS = 10


def stored_decision(row: MatchDecision) -> matching.MatchDecision:
    """The matcher's decision as ``match_decisions`` stored it."""
    candidates = tuple(
        matching.CandidateCost(
            driver_id=uuid.UUID(candidate["driver_id"]),
            distance_m=float(candidate["distance_m"]),
            eta_s=float(candidate["eta_s"]),
            fairness_bonus_s=float(candidate["fairness_bonus_s"]),
            cost=float(candidate["cost"]),
        )
        for candidate in row.candidates
    )
    chosen = next((c for c in candidates if c.driver_id == row.chosen_driver_id), None)
    return matching.MatchDecision(
        request_id=row.ride_id,
        policy="greedy" if row.policy == "greedy" else "batched",
        decided_at=row.window_at,
        waited_s=float(row.params.get("waited_s", 0.0)),
        radius_m=float(row.params.get("radius_m", 0.0)),
        chosen=chosen,
        candidates=candidates,
    )


def explanation_read(row: MatchDecision, driver_id: uuid.UUID) -> MatchExplanationRead:
    decision = stored_decision(row)
    told = matching.explain(decision, driver_id)
    return MatchExplanationRead(
        decision_id=row.id,
        ride_id=row.ride_id,
        decided_at=row.window_at,
        policy=row.policy,
        outcome=told.outcome,
        waited_s=decision.waited_s,
        radius_m=decision.radius_m,
        candidates=len(decision.candidates),
        own=_cost(told.own),
        winner=_cost(told.winner),
    )


def lorenz(values: list[float], points: int = LORENZ_POINTS) -> list[float]:
    """The share of the total held by the lowest 1/points, 2/points, ... of ``values``."""
    ordered = sorted(values)
    total = sum(ordered)
    if not ordered or total <= 0:
        return [0.0] * points
    return [
        round(sum(ordered[: math.ceil(step * len(ordered) / points)]) / total, 4)
        for step in range(1, points + 1)
    ]


def _cost(breakdown: matching.CostBreakdown | None) -> CostRead | None:
    if breakdown is None:
        return None
    return CostRead(
        eta_s=breakdown.eta_s, fairness_bonus_s=breakdown.fairness_bonus_s, cost=breakdown.cost
    )


class TransparencyService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.decisions = MatchDecisionRepository(session)
        self.offers = OfferRepository(session)
        self.fairness = FairnessRepository(session)
        self.clock = clock

    async def explanations(
        self, driver_id: uuid.UUID, ride_id: uuid.UUID | None, limit: int = MAX_EXPLANATIONS
    ) -> list[MatchExplanationRead]:
        """The decisions of the last ``EXPLANATION_DAYS`` days (of one ride, if given)
        in which the driver was a candidate, newest first."""
        since = self.clock.now() - timedelta(days=EXPLANATION_DAYS)
        rows = await self.decisions.with_candidate(
            driver_id, ride_id=ride_id, since=since, limit=max(1, min(limit, MAX_EXPLANATIONS))
        )
        return [explanation_read(row, driver_id) for row in rows]

    async def explanation(
        self, driver_id: uuid.UUID, decision_id: uuid.UUID
    ) -> MatchExplanationRead:
        """One decision, told to a driver who was a candidate in it; to anyone else it
        does not exist."""
        row = await self.decisions.get(decision_id)
        if row is None or not any(c["driver_id"] == str(driver_id) for c in row.candidates):
            raise MatchDecisionNotFound
        return explanation_read(row, driver_id)

    async def fairness_of(self, day: date) -> FairnessRead:
        """How evenly earnings and offers per hour online were spread on ``day`` (UTC)."""
        since = datetime.combine(day, time.min, UTC)
        until = since + timedelta(days=1)
        now = min(self.clock.now(), until)
        online = await self.fairness.online_seconds(since, until, now)
        fares = await self.fairness.fares_by_driver(since, until, list(online))
        offers = await self.offers.offers_by_driver(since, until)
        currency = _main_currency([code for _, code, _ in fares])
        earned: dict[uuid.UUID, int] = {}
        for driver_id, code, amount in fares:
            if code == currency:
                earned[driver_id] = earned.get(driver_id, 0) + amount
        hours = {driver_id: seconds / 3600 for driver_id, seconds in online.items()}
        earnings_per_hour = [earned.get(d, 0) / h for d, h in hours.items()]
        offers_per_hour = [offers.get(d, 0) / h for d, h in hours.items()]
        return FairnessRead(
            day=day,
            drivers=len(hours),
            hours_online=round(sum(hours.values()), 3),
            offers=sum(offers.get(d, 0) for d in hours),
            earnings_amount=sum(earned.values()),
            currency=currency,
            earnings_per_hour_gini=round(matching.gini(earnings_per_hour), 4),
            offers_per_hour_gini=round(matching.gini(offers_per_hour), 4),
            earnings_per_hour_lorenz=lorenz(earnings_per_hour),
        )


def _main_currency(codes: list[str]) -> str | None:
    if not codes:
        return None
    counts = Counter(codes)
    return min(counts, key=lambda code: (-counts[code], code))
