from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
