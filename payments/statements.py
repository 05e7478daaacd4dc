"""What the money did, for the people it concerns: drivers' statements, earnings and
payouts, riders' receipts, and the co-op's books for its members.

Read-only. Every figure comes from what is recorded: a ride's fare, split and captured
amounts, and the ledger (Stripe's fees, transfers, account totals). Stripe's fee on a
charge reaches the ledger through the daily reconciliation (payments.reconciliation), so
a trip shows a fee of 0 until then. The co-op pays Stripe's fees; they never come out of
the driver's share.

The books are transparent by design (members see where the money goes) but never
personal: accounts that belong to one driver, rider or member are shown only as totals.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from sqlalchemy.ext.asyncio import AsyncSession

from infra.clock import Clock
from payments.errors import ReportPeriodInvalid, RidePaymentNotFound, TimeZoneUnknown
from payments.ledger import CHART, AccountKind, NormalSide, normal_amount
from payments.models import RidePayment
from payments.repository import PayoutAccountRepository, StatementRepository
from payments.schemas import (
    BooksLine,
    BooksSection,
    CoopBooks,
    DriverPayoutHistory,
    DriverPayoutLine,
    DriverTransferLine,
    DriverTripLine,
    FareRead,
    IncomeStatement,
    PeriodSummary,
    Receipt,
)

# Bounds on one request's work: a year of trips, of summaries or of books at once.
MAX_STATEMENT_DAYS = 366
MAX_PAYOUT_LINES = 500

Period = Literal["day", "week"]

SECTIONS: Mapping[AccountKind, BooksSection] = MappingProxyType(
    {
        AccountKind.stripe_balance: "assets",
        AccountKind.bank: "assets",
        AccountKind.disputes: "assets",
        AccountKind.driver_receivable: "assets",
        AccountKind.rider_receivable: "assets",
        AccountKind.driver_payable: "liabilities",
        AccountKind.tips_payable: "liabilities",
        AccountKind.pass_through_payable: "liabilities",
        AccountKind.dividends_payable: "liabilities",
        AccountKind.reserve: "equity",
        AccountKind.member_capital: "equity",
        AccountKind.patronage_dividends: "equity",
        AccountKind.coop_commission_revenue: "revenue",
        AccountKind.booking_fee_revenue: "revenue",
        AccountKind.cancellation_fee_revenue: "revenue",
        AccountKind.stripe_fees: "expenses",
        AccountKind.refunds: "expenses",
        AccountKind.dispute_losses: "expenses",
    }
)


def check_period(start: datetime, end: datetime, max_days: int = MAX_STATEMENT_DAYS) -> None:
    """Raises ``ReportPeriodInvalid`` unless [start, end) is timezone-aware, not empty and
    at most ``max_days`` long."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ReportPeriodInvalid("from and to need a time zone offset (2026-03-01T00:00Z)")
    if start >= end:
        raise ReportPeriodInvalid("from must be before to")
    if end - start > timedelta(days=max_days):
        raise ReportPeriodInvalid(f"a period spans at most {max_days} days")


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises ``TimeZoneUnknown`` for anything else (the
    name also goes to PostgreSQL, which knows the same IANA names)."""
    if name not in _time_zone_names():
        raise TimeZoneUnknown(f"{name!r} is not an IANA time zone name")
    return ZoneInfo(name)


@functools.cache
def _time_zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


class StatementService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.statements = StatementRepository(session)
        self.payout_accounts = PayoutAccountRepository(session)
        self.clock = clock

    # Drivers.

    async def driver_trips(
        self, driver_id: uuid.UUID, start: datetime, end: datetime
    ) -> list[DriverTripLine]:
        """The driver's rides settled in [start, end), oldest first."""
        check_period(start, end)
        return [
            DriverTripLine(
                ride_id=trip.ride_id,
                status=trip.status,
                settled_at=trip.settled_at,
                currency=trip.currency,
                fare_amount=trip.fare,
                rider_paid_amount=trip.rider_paid,
                driver_share_amount=trip.driver_share,
                tip_amount=trip.tip,
                coop_share_amount=trip.coop_share,
                pass_through_amount=trip.pass_through,
                stripe_fee_amount=trip.stripe_fees,
                refunded_amount=trip.refunded,
                transferred_amount=trip.transferred,
            )
            for trip in await self.statements.driver_trips(driver_id, start, end)
        ]

    async def driver_summary(
        self,
        driver_id: uuid.UUID,
        period: Period,
        start: datetime,
        end: datetime,
        tz: str = "UTC",
    ) -> list[PeriodSummary]:
        """The driver's rides settled in [start, end) summed per day or week (weeks start
        on Monday) of time zone ``tz``, per currency; periods without trips are left out."""
        check_period(start, end)
        zone = time_zone(tz)
        if period not in ("day", "week"):
            raise ReportPeriodInvalid("a summary is per day or per week")
        return [
            PeriodSummary(
                period_start=row.period_start.astimezone(zone),
                currency=row.currency,
                trips=row.trips,
                fares_amount=row.fares,
                rider_paid_amount=row.rider_paid,
                driver_earnings_amount=row.driver_earnings,
                tips_amount=row.tips,
                coop_share_amount=row.coop_share,
                pass_through_amount=row.pass_through,
                stripe_fees_amount=row.stripe_fees,
                refunded_amount=row.refunded,
            )
            for row in await self.statements.driver_periods(driver_id, start, end, period, tz)
        ]

    async def driver_payouts(
        self, driver_id: uuid.UUID, limit: int = MAX_PAYOUT_LINES
    ) -> DriverPayoutHistory:
        """Transfers to the driver's connected account (from the ledger) and payouts from
        it to their bank (as Stripe reported them), newest first."""
        limit = max(1, min(limit, MAX_PAYOUT_LINES))
        transfers = await self.statements.driver_transfers(driver_id, limit)
        payouts = await self.payout_accounts.payouts(driver_id, limit)
        return DriverPayoutHistory(
            transfers=[
                DriverTransferLine(
                    transfer_id=row.reference,
                    kind="tips" if row.kind == "tip_transfer" else "earnings",
                    amount=row.amount,
                    currency=row.currency,
                    recorded_at=row.recorded_at,
                )
                for row in transfers
            ],
            payouts=[DriverPayoutLine.model_validate(payout) for payout in payouts],
        )

    # Riders.

    async def rider_receipts(
        self, rider_id: uuid.UUID, limit: int, before: datetime | None = None
    ) -> list[Receipt]:
        """The rider's receipts, newest first; ``before`` (a receipt's ``requested_at``)
        continues after it."""
        payments = await self.statements.receipts(rider_id, max(1, limit), before)
        return [_receipt(payment) for payment in payments]

    async def rider_receipt(self, rider_id: uuid.UUID, ride_id: uuid.UUID) -> Receipt:
        """Raises ``RidePaymentNotFound`` when the ride is not this rider's (or was never
        priced): another rider's ride looks exactly like one that does not exist."""
        payment = await self.statements.receipt(rider_id, ride_id)
        if payment is None:
            raise RidePaymentNotFound
        return _receipt(payment)

    # Members.

    async def coop_books(self, currency: str, start: datetime, end: datetime) -> CoopBooks:
        """Every kind of account in ``currency``: its balance at ``start`` and ``end`` and
        what went in and out between, summed over owners; and the income statement of
        [start, end)."""
        check_period(start, end)
        totals = {t.kind: t for t in await self.statements.kind_totals(currency, start, end)}
        lines: list[BooksLine] = []
        for kind in AccountKind:
            side = CHART[kind].normal_side
            found = totals.get(kind.value)
            current, after, debits, credits = (
                (found.current, found.after_period, found.debits, found.credits)
                if found
                else (0, 0, 0, 0)
            )
            closing = current - after
            increases, decreases = (
                (debits, credits) if side is NormalSide.debit else (credits, debits)
            )
            lines.append(
                BooksLine(
                    account=kind.value,
                    section=SECTIONS[kind],
                    opening_amount=normal_amount(side, closing - debits + credits),
                    increases_amount=increases,
                    decreases_amount=decreases,
                    closing_amount=normal_amount(side, closing),
                )
            )

        def change(section: BooksSection) -> int:
            return sum(
                line.increases_amount - line.decreases_amount
                for line in lines
                if line.section == section
            )

        reserve = next(line for line in lines if line.account == AccountKind.reserve.value)
        revenue, expenses = change("revenue"), change("expenses")
        return CoopBooks(
            currency=currency,
            period_from=start,
            period_to=end,
            income=IncomeStatement(
                revenue_amount=revenue,
                expenses_amount=expenses,
                surplus_amount=revenue - expenses,
                reserve_added_amount=reserve.increases_amount - reserve.decreases_amount,
            ),
            lines=lines,
        )


def _receipt(payment: RidePayment) -> Receipt:
    assert payment.fare is not None  # receipts are read for priced rides only
    fare = FareRead.model_validate(payment.fare)
    tip = payment.tip_amount if payment.tip_charge_id is not None and payment.tip_amount else 0
    charged = (payment.captured_amount or 0) + tip
    return Receipt(
        ride_id=payment.ride_id,
        status=payment.status,
        currency=payment.currency,
        basis=fare.basis,
        requested_at=payment.created_at,
        settled_at=payment.settled_at,
        line_items=fare.line_items,
        fare_amount=fare.total,
        tip_amount=tip,
        charged_amount=charged,
        refunded_amount=payment.refunded_amount,
        total_amount=charged - payment.refunded_amount,
    )
