from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from payments.money import Money
from payments.pricing import Fare, FareSplit


class MoneyRead(BaseModel):
    amount: int = Field(description="Minor units (cents)")
    currency: str

    @classmethod
    def of(cls, money: Money) -> MoneyRead:
        return cls(amount=money.amount, currency=money.currency)


class LineItemRead(BaseModel):
    code: str
    description: str
    amount: int


class FareRead(BaseModel):
    policy_id: uuid.UUID
    policy_version: int
    basis: str
    currency: str
    total: int
    line_items: list[LineItemRead]

    @classmethod
    def of(cls, fare: Fare) -> FareRead:
        return cls(
            policy_id=fare.policy_id,
            policy_version=fare.policy_version,
            basis=fare.basis,
            currency=fare.currency,
            total=fare.total.amount,
            line_items=[
                LineItemRead(code=i.code, description=i.description, amount=i.amount.amount)
                for i in fare.line_items
            ],
        )


class SplitRead(BaseModel):
    driver: int
    commission: int
    reserve: int
    booking_fee: int
    pass_through: int

    @classmethod
    def of(cls, split: FareSplit) -> SplitRead:
        return cls(
            driver=split.driver.amount,
            commission=split.commission.amount,
            reserve=split.reserve.amount,
            booking_fee=split.booking_fee.amount,
            pass_through=split.pass_through.amount,
        )

    def to_split(self, currency: str) -> FareSplit:
        return FareSplit(
            driver=Money(self.driver, currency),
            commission=Money(self.commission, currency),
            reserve=Money(self.reserve, currency),
            booking_fee=Money(self.booking_fee, currency),
            pass_through=Money(self.pass_through, currency),
        )


RidePaymentStatusName = Literal[
    "authorizing",
    "authorized",
    "declined",
    "capturing",
    "captured",
    "in_debt",
    "debt_paid",
    "cancelling",
    "cancelled",
    "fee_captured",
]


class RidePaymentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ride_id: uuid.UUID
    rider_id: uuid.UUID
    driver_id: uuid.UUID | None
    status: RidePaymentStatusName
    currency: str
    authorized_amount: int
    captured_amount: int | None
    refunded_amount: int
    transferred_amount: int
    tip_amount: int | None
    fare: dict[str, Any] | None
    split: dict[str, int] | None
    failure_code: str | None
    created_at: datetime
    settled_at: datetime | None


class CardSetup(BaseModel):
    customer_id: str
    setup_intent_id: str
    client_secret: str = Field(description="For the app to confirm the card with Stripe")


class SavePaymentMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_method_id: str = Field(min_length=3, max_length=255, pattern=r"^pm_[A-Za-z0-9_]+$")


class PaymentMethodRead(BaseModel):
    id: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    default: bool


class PayoutAccountRead(BaseModel):
    stripe_account_id: str
    details_submitted: bool
    charges_enabled: bool
    payouts_enabled: bool


class OnboardingLink(BaseModel):
    url: str
    expires_at: datetime
    account: PayoutAccountRead


class RiderBalance(BaseModel):
    owed: list[MoneyRead] = Field(description="Unpaid fares, per currency; new rides wait")
    can_request_rides: bool


class TipRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(gt=0, le=100_000, description="Minor units")


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int | None = Field(
        default=None, gt=0, description="Minor units; omitted refunds what is left"
    )
    reason: str = Field(min_length=3, max_length=500)
    request_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Names this refund: the same request_id again refunds nothing more",
    )
    clawback: Literal["none", "from_driver"] = Field(
        default="from_driver",
        description="Whether the driver's share comes back from the driver (reversing the "
        "transfer, or as a debt offset against later earnings) or the co-op absorbs it",
    )


# Statements, receipts and the co-op's books.


class DriverTripLine(BaseModel):
    """One trip on a driver's statement: where the rider's money went."""

    ride_id: uuid.UUID
    status: RidePaymentStatusName
    settled_at: datetime
    currency: str
    fare_amount: int = Field(description="The fare, the sum of its line items")
    rider_paid_amount: int = Field(description="Taken from the rider's card: fare and tip")
    driver_share_amount: int = Field(description="The driver's part of the fare")
    tip_amount: int = Field(description="The tip, all of it the driver's; 0 without one")
    coop_share_amount: int = Field(description="Commission, reserve and booking fee")
    pass_through_amount: int = Field(description="Zone surcharges owed to third parties")
    stripe_fee_amount: int = Field(
        description="Stripe's fees on the fare's and the tip's charges, paid by the co-op "
        "(not taken from the driver); 0 until the daily reconciliation books them"
    )
    refunded_amount: int
    transferred_amount: int = Field(
        description="Of the driver's share and tip, what is settled: sent to their Stripe "
        "account, or set against a claw-back they owed"
    )


class PeriodSummary(BaseModel):
    """A driver's trips of one day or week (in the time zone asked for), per currency."""

    period_start: datetime = Field(description="Local midnight starting the day or week")
    currency: str
    trips: int
    fares_amount: int = Field(description="Gross: the sum of the fares")
    rider_paid_amount: int
    driver_earnings_amount: int
    tips_amount: int
    coop_share_amount: int
    pass_through_amount: int
    stripe_fees_amount: int
    refunded_amount: int


class DriverTransferLine(BaseModel):
    """Money sent from the co-op's Stripe balance to the driver's connected account."""

    transfer_id: str | None
    kind: Literal["earnings", "tips"]
    amount: int
    currency: str
    recorded_at: datetime


class DriverPayoutLine(BaseModel):
    """A payout from the driver's connected account to their bank, as Stripe reported it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    amount: int
    currency: str
    status: str
    arrival_at: datetime | None
    updated_at: datetime


class DriverPayoutHistory(BaseModel):
    transfers: list[DriverTransferLine] = Field(description="Newest first")
    payouts: list[DriverPayoutLine] = Field(description="Newest first")


class Receipt(BaseModel):
    """A rider's receipt for a priced ride (fare, cancellation or no-show fee)."""

    ride_id: uuid.UUID
    status: RidePaymentStatusName
    currency: str
    basis: str = Field(description="upfront, metered, cancellation or no_show")
    requested_at: datetime = Field(description="Pass the last one as `before` for the next page")
    settled_at: datetime | None
    line_items: list[LineItemRead]
    fare_amount: int
    tip_amount: int = Field(description="0 without a (charged) tip")
    charged_amount: int = Field(description="Taken from the card: fare (as captured) and tip")
    refunded_amount: int
    total_amount: int = Field(description="What the ride cost in the end: charged - refunded")


BooksSection = Literal["assets", "liabilities", "equity", "revenue", "expenses"]


class BooksLine(BaseModel):
    """One kind of account, summed over every owner (never per person), in its normal
    direction: increases are credits for liabilities, equity and revenue, debits else."""

    account: str
    section: BooksSection
    opening_amount: int
    increases_amount: int
    decreases_amount: int
    closing_amount: int


class IncomeStatement(BaseModel):
    revenue_amount: int = Field(description="Commission, booking and cancellation fees")
    expenses_amount: int = Field(description="Stripe fees, refunds and dispute losses")
    surplus_amount: int = Field(description="Revenue minus expenses")
    reserve_added_amount: int = Field(description="Set aside into the reserve from fares")


class CoopBooks(BaseModel):
    """The co-op's books over [period_from, period_to), open to every member."""

    currency: str
    period_from: datetime
    period_to: datetime
    income: IncomeStatement
    lines: list[BooksLine]


# Reconciliation with Stripe.

DifferenceKind = Literal["missing_in_ledger", "missing_at_stripe", "amount_mismatch"]
MovementKind = Literal[
    "charge",
    "stripe_fee",
    "refund",
    "transfer",
    "transfer_reversal",
    "payout",
    "dispute",
    "dispute_reversal",
    "other",
]


class ReconciliationDifference(BaseModel):
    kind: DifferenceKind
    movement: MovementKind
    reference: str = Field(description="The Stripe object moved (ch_, re_, tr_, po_, du_ …)")
    currency: str
    stripe_amount: int | None = Field(description="Signed, as it moved the Stripe balance")
    ledger_amount: int | None = Field(description="Signed, as posted to the stripe_balance")
    stripe_type: str | None = Field(description="Stripe's balance transaction type")
    balance_transaction_ids: list[str]
    ledger_transaction_ids: list[uuid.UUID]
    at: datetime = Field(description="When Stripe created it, or else when it was recorded")


class ReconciliationRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    period_from: datetime
    period_to: datetime
    started_at: datetime
    finished_at: datetime | None
    checked: int = Field(description="Stripe balance transactions created in the period")
    differences: list[ReconciliationDifference]


class BookedFee(BaseModel):
    charge_id: str
    amount: int
    currency: str


class ReconciliationReport(ReconciliationRunRead):
    fees_booked: list[BookedFee] = Field(
        description="Stripe fees this run recorded in the ledger (a fee is booked once)"
    )


class ReconciliationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period_from: AwareDatetime
    period_to: AwareDatetime
