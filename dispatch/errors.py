from __future__ import annotations

from infra.errors import Conflict, Forbidden, Invalid, NotFound, TooManyRequests


class RideOutsideServiceArea(Invalid):
    type = "ride-outside-service-area"
    title = "The pickup or drop-off is outside the service area"


class ZoneGeometryInvalid(Invalid):
    type = "zone-geometry-invalid"
    title = "The zone's area is not a valid GeoJSON Polygon or MultiPolygon"


class ZoneCodeTaken(Conflict):
    type = "zone-code-taken"
    title = "A zone with this code already exists"


class QuoteNotFound(NotFound):
    type = "quote-not-found"
    title = "No such quote (or not yours)"


class QuoteExpired(Conflict):
    type = "quote-expired"
    title = "The quote has expired; ask for a new one"


class QuoteAlreadyUsed(Conflict):
    type = "quote-already-used"
    title = "A ride was already requested with this quote"


class RideRequestKeyReused(Conflict):
    type = "ride-request-key-reused"
    title = "This Idempotency-Key was already used to request a ride with another quote"


class RideAlreadyOpen(Conflict):
    type = "ride-already-open"
    title = "The rider already has a ride under way"


class RideNotFound(NotFound):
    type = "ride-not-found"
    title = "No such ride (or not yours)"


class RideStateConflict(Conflict):
    type = "ride-state-conflict"
    title = "The ride is not in a state that allows this"


class NotRideDriver(Forbidden):
    type = "not-ride-driver"
    title = "Only the ride's driver may do this"


class DriverBusy(Conflict):
    type = "driver-busy"
    title = "The driver already has a ride under way"


class DriverExcluded(Conflict):
    type = "driver-excluded"
    title = "This driver declined or cancelled this ride and is not offered it again"


class DriverNotAtPickup(Invalid):
    type = "driver-not-at-pickup"
    title = "The driver is too far from the pickup to arrive"


class WrongPin(Invalid):
    type = "wrong-pin"
    title = "The PIN does not match the rider's"


class PinAttemptsExhausted(TooManyRequests):
    type = "pin-attempts-exhausted"
    title = "Too many wrong PINs for this ride; it cannot be started"


class NoShowTooEarly(Conflict):
    type = "no-show-too-early"
    title = "The rider still has time to come; wait until the grace period is over"


class CancellationFeeChanged(Conflict):
    type = "cancellation-fee-changed"
    title = "Cancelling now costs more than the fee accepted; look at the new fee"


class RideAlreadyRated(Conflict):
    type = "ride-already-rated"
    title = "This ride was already rated"


class OfferNotFound(NotFound):
    type = "offer-not-found"
    title = "No such offer"


class OfferNotYours(Forbidden):
    type = "offer-not-yours"
    title = "This offer was made to another driver"


class OfferExpired(Conflict):
    type = "offer-expired"
    title = "The offer is no longer open: it expired, was declined, withdrawn or taken"


class MatchDecisionNotFound(NotFound):
    type = "match-decision-not-found"
    title = "No such matching decision among those you were a candidate in"
