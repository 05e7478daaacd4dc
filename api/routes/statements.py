"""Where the money went: drivers' statements and payouts, riders' receipts, the co-op's
books for its members, and the reconciliation with Stripe for admins."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from api.deps import (
    AdminOnly,
    CurrentDriver,
    CurrentMember,
    CurrentRider,
    DbSession,
    ResourcesDep,
    Uow,
)
from api.problems import problem_responses
from payments.errors import UnsupportedCurrency
from payments.money import MINOR_UNIT_EXPONENT
from payments.reconciliation import BalanceTransactions, Reconciler, ReconciliationRuns
from payments.schemas import (
    CoopBooks,
    DriverPayoutHistory,
    DriverTripLine,
    PeriodSummary,
    Receipt,
    ReconciliationReport,
    ReconciliationRequest,
    ReconciliationRunRead,
)
from payments.statements import Period, StatementService

router = APIRouter(tags=["statements"])

DEFAULT_DAYS = 30

From = Annotated[
    AwareDatetime | None,
    Query(alias="from", description="Start, inclusive, with an offset; default: `to` - 30 days"),
]
To = Annotated[
    AwareDatetime | None,
    Query(alias="to", description="End, exclusive, with an offset; default: now"),
]


def get_statements(resources: ResourcesDep, session: DbSession) -> StatementService:
    return StatementService(session, resources.clock)


Statements = Annotated[StatementService, Depends(get_statements)]


def get_balance_transactions(resources: ResourcesDep) -> BalanceTransactions:
    return resources.gateway


def _period(
    resources: ResourcesDep, start: From = None, end: To = None
) -> tuple[datetime, datetime]:
    end = end or resources.clock.now()
    return start or end - timedelta(days=DEFAULT_DAYS), end


PeriodQuery = Annotated[tuple[datetime, datetime], Depends(_period)]


@router.get(
    "/v1/drivers/me/statements",
    responses=problem_responses(401, 403, 422),
    summary="Each trip settled in the period: what the rider paid, the driver's share and "
    "tip, the co-op's share, pass-through, Stripe's fee, refunds and transfers",
)
async def driver_statements(
    driver: CurrentDriver, statements: Statements, period: PeriodQuery
) -> list[DriverTripLine]:
    return await statements.driver_trips(driver.user_id, *period)


@router.get(
    "/v1/drivers/me/earnings",
    responses=problem_responses(401, 403, 422),
    summary="The driver's trips summed per day or week (from Monday) of a time zone",
)
async def driver_earnings(
    driver: CurrentDriver,
    statements: Statements,
    period: PeriodQuery,
    group: Annotated[Period, Query(alias="period")] = "day",
    tz: Annotated[str, Query(max_length=64, description="IANA time zone")] = "UTC",
) -> list[PeriodSummary]:
    return await statements.driver_summary(driver.user_id, group, *period, tz=tz)


@router.get(
    "/v1/drivers/me/payouts",
    responses=problem_responses(401, 403, 422),
    summary="Transfers to the driver's Stripe account and payouts from it to their bank",
)
async def driver_payouts(
    driver: CurrentDriver,
    statements: Statements,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DriverPayoutHistory:
    return await statements.driver_payouts(driver.user_id, limit)


@router.get(
    "/v1/riders/me/receipts",
    responses=problem_responses(401, 403, 422),
    summary="The rider's receipts, newest first (pass the last `requested_at` as `before`)",
)
async def rider_receipts(
    rider: CurrentRider,
    statements: Statements,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: AwareDatetime | None = None,
) -> list[Receipt]:
    return await statements.rider_receipts(rider.user_id, limit, before)


@router.get(
    "/v1/riders/me/receipts/{ride_id}",
    responses=problem_responses(401, 403, 404, 422),
    summary="One receipt: the fare's line items, tip, refunds and what was charged",
)
async def rider_receipt(ride_id: uuid.UUID, rider: CurrentRider, statements: Statements) -> Receipt:
    return await statements.rider_receipt(rider.user_id, ride_id)


@router.get(
    "/v1/members/books",
    responses=problem_responses(401, 403, 422),
    summary="The co-op's books: income statement and every account kind's totals (members)",
)
async def coop_books(
    member: CurrentMember,
    statements: Statements,
    period: PeriodQuery,
    currency: Annotated[str, Query(pattern="^[A-Z]{3}$", description="ISO 4217 code")] = "USD",
) -> CoopBooks:
    if currency not in MINOR_UNIT_EXPONENT:
        raise UnsupportedCurrency(f"{currency} is not one of {sorted(MINOR_UNIT_EXPONENT)}")
    return await statements.coop_books(currency, *period)


@router.get(
    "/v1/admin/reconciliation",
    responses=problem_responses(401, 403, 422),
    summary="The latest reconciliation runs with Stripe, newest first, with their differences",
)
async def reconciliation_runs(
    admin: AdminOnly, session: DbSession, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[ReconciliationRunRead]:
    return await ReconciliationRuns(session).latest(limit)


@router.post(
    "/v1/admin/reconciliation",
    responses=problem_responses(401, 403, 422, 503),
    summary="Reconcile a period (at most 31 days) with Stripe now; books missing Stripe fees",
)
async def reconcile(
    body: ReconciliationRequest,
    admin: AdminOnly,
    uow: Uow,
    resources: ResourcesDep,
    gateway: Annotated[BalanceTransactions, Depends(get_balance_transactions)],
) -> ReconciliationReport:
    report = await Reconciler(uow.session, gateway, resources.clock).run(
        body.period_from, body.period_to
    )
    await uow.commit()
    return report
