from __future__ import annotations

import uuid

from infra.errors import Conflict, DomainError, Invalid, NotFound, ServiceUnavailable


class FarePolicyMismatch(Conflict):
    type = "fare-policy-mismatch"
    title = "The fare policy version given is not the one this fare was priced with"

    def __init__(
        self,
        *,
        expected_id: uuid.UUID,
        expected_version: int,
        given_id: uuid.UUID,
        given_version: int,
    ) -> None:
        super().__init__(
            f"priced with fare policy {expected_id} v{expected_version}, "
            f"given {given_id} v{given_version}"
        )
        self.expected_id = expected_id
        self.expected_version = expected_version
        self.given_id = given_id
        self.given_version = given_version


class CardDeclined(Invalid):
    status = 402
    type = "card-declined"
    title = "The card was declined"

    def __init__(
        self,
        detail: str | None = None,
        *,
        decline_code: str | None = None,
        payment_intent_id: str | None = None,
    ) -> None:
        super().__init__(detail, decline_code=decline_code)
        self.decline_code = decline_code
        self.payment_intent_id = payment_intent_id


class CardAuthenticationRequired(Invalid):
    status = 402
    type = "card-authentication-required"
    title = "The bank asks the rider to authenticate this payment"

    def __init__(self, detail: str | None = None, *, payment_intent_id: str | None = None) -> None:
        super().__init__(detail)
        self.payment_intent_id = payment_intent_id


class PaymentRequestRejected(Invalid):
    type = "payment-request-rejected"
    title = "The payment provider refused the request"

    def __init__(
        self, detail: str | None = None, *, stripe_code: str | None, param: str | None
    ) -> None:
        super().__init__(detail, stripe_code=stripe_code)
        self.stripe_code = stripe_code
        self.param = param


class PaymentResourceMissing(NotFound):
    type = "payment-resource-missing"
    title = "The payment provider has no such object"


class IdempotencyKeyReused(Conflict):
    type = "idempotency-key-reused"
    title = "This idempotency key was already used with different parameters"

    def __init__(self, idempotency_key: str) -> None:
        super().__init__(f"idempotency key {idempotency_key!r} was used with other parameters")
        self.idempotency_key = idempotency_key


class PaymentProviderUnavailable(ServiceUnavailable):
    """Transient: the same call with the same idempotency key may be retried."""

    type = "payment-provider-unavailable"
    title = "The payment provider is unavailable; try again"


class PaymentProviderMisconfigured(ServiceUnavailable):
    type = "payment-provider-misconfigured"
    title = "The payment provider refused our credentials"


class WebhookSignatureInvalid(DomainError):
    status = 400
    type = "webhook-signature-invalid"
    title = "The webhook signature is missing, wrong or too old"


class WebhookPayloadInvalid(DomainError):
    status = 400
    type = "webhook-payload-invalid"
    title = "The webhook body is not a Stripe event"


class LedgerDraftInvalid(Invalid):
    type = "ledger-draft-invalid"
    title = "The ledger transaction is not valid"


class LedgerIdempotencyConflict(Conflict):
    type = "ledger-idempotency-conflict"
    title = "This idempotency key was already used for a different ledger transaction"


class LedgerAccountOverdrawn(Conflict):
    type = "ledger-account-overdrawn"
    title = "An account that may not go negative would go below zero"


class DividendCashShareTooLow(Invalid):
    type = "dividend-cash-share-too-low"
    title = "A patronage dividend must pay the required share in cash"


class FarePolicyNotInForce(NotFound):
    type = "fare-policy-not-in-force"
    title = "No fare policy is in force at that time"


class FarePolicyVersionExists(Conflict):
    type = "fare-policy-version-exists"
    title = "A fare policy with this version number already exists"


class RiderHasUnpaidFare(DomainError):
    status = 402
    type = "rider-has-unpaid-fare"
    title = "An earlier fare is unpaid; settle it before requesting a ride"


class PaymentMethodRequired(Conflict):
    type = "payment-method-required"
    title = "Save a card before requesting a ride"


class RidePaymentNotFound(NotFound):
    type = "ride-payment-not-found"
    title = "No payment for this ride"


class RidePaymentStateConflict(Conflict):
    type = "ride-payment-state-conflict"
    title = "The ride's payment is not in a state that allows this"


class NothingToRefund(Conflict):
    type = "nothing-to-refund"
    title = "Nothing captured is left to refund"


class PayoutAccountMissing(NotFound):
    type = "payout-account-missing"
    title = "The driver has not started payout onboarding"


class RideHasNoFare(Conflict):
    type = "ride-has-no-fare"
    title = "The ride has no fare or driver yet"


class ReportPeriodInvalid(Invalid):
    type = "report-period-invalid"
    title = "The period must be timezone-aware, start before it ends and not be too long"


class TimeZoneUnknown(Invalid):
    type = "time-zone-unknown"
    title = "Not an IANA time zone name (such as Europe/Paris)"


class UnsupportedCurrency(Invalid):
    type = "unsupported-currency"
    title = "The platform does not handle this currency"


class StripeEventNotReady(Conflict):
    """A webhook event about something not recorded here yet; it is retried."""

    type = "stripe-event-not-ready"
    title = "The event is about something not recorded here yet; it is retried later"


class StripeEventUnsupported(Conflict):
    """A webhook event the ledger cannot record by itself; dead-lettered at once."""

    type = "stripe-event-unsupported"
    title = "The event describes a change that is not recorded automatically"
