"""A ride's events. Each transition emits one, sent to the rider and the driver of the
ride (never its PIN, which only the rider reads, from the API)."""

from __future__ import annotations

import dataclasses
import uuid

from infra.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class RideDomainEvent(DomainEvent):
    ride_id: uuid.UUID
    rider_id: uuid.UUID
    driver_id: uuid.UUID | None
    status: str

    def recipients(self) -> tuple[uuid.UUID, ...]:
        if self.driver_id is None:
            return (self.rider_id,)
        return (self.rider_id, self.driver_id)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RideRequested(RideDomainEvent):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatchingStarted(RideDomainEvent):
    """The payment is held: the ride is open to drivers."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RidePaymentFailed(RideDomainEvent):
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriverAssigned(RideDomainEvent):
    offer_id: uuid.UUID | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriverArrived(RideDomainEvent):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class TripStarted(RideDomainEvent):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class TripCompleted(RideDomainEvent):
    fare_amount: int
    currency: str
    distance_m: int
    duration_s: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class RideCancelled(RideDomainEvent):
    """The rider cancelled; ``fee_amount`` is 0 when it was free."""

    fee_amount: int
    currency: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriverCancelled(RideDomainEvent):
    """The driver gave the ride up: it is back in matching, without them. ``driver_id``
    names the driver who cancelled, so they hear of it too."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RiderNoShow(RideDomainEvent):
    fee_amount: int
    currency: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoDriverFound(RideDomainEvent):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class RideRated(RideDomainEvent):
    rating: int

    def recipients(self) -> tuple[uuid.UUID, ...]:
        # A driver reads ratings in aggregate, never one rider's, live.
        return ()
