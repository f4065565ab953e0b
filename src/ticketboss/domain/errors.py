"""What can go wrong, as nouns the API maps to HTTP statuses."""


class DomainError(Exception):
    """Base of the errors a use case raises on purpose."""


class Unauthenticated(DomainError):
    """No key (`given` False), or one that is malformed, unknown or revoked."""

    def __init__(self, detail: str, *, given: bool):
        super().__init__(detail)
        self.given = given


class Forbidden(DomainError):
    """A valid key without the right to do this."""


class EventNotFound(DomainError):
    def __init__(self, event_id: str):
        super().__init__(f"Event '{event_id}' does not exist.")
        self.event_id = event_id


class ReservationNotFound(DomainError):
    def __init__(self, reservation_id, *, confirmed_only: bool = False):
        what = "confirmed reservation" if confirmed_only else "reservation"
        super().__init__(f"No {what} with id '{reservation_id}'.")
        self.reservation_id = reservation_id


# The buckets a request can run out of (NotEnoughSeats.bucket): the open pool (the whole
# event when it has no allocations), a partner's allocation, or both for one that overflows.
POOL, ALLOCATION, ALLOCATION_AND_POOL = "pool", "allocation", "allocation+pool"
_IN_BUCKET = {
    POOL: "",
    ALLOCATION: " in the allocation of partner '{partner}'",
    ALLOCATION_AND_POOL: " in the allocation of partner '{partner}' and the open pool",
}


class NotEnoughSeats(DomainError):
    """The bucket the request drew from has fewer seats than it asked for."""

    def __init__(
        self,
        event_id: str,
        requested: int,
        available: int,
        *,
        bucket: str = POOL,
        partner_id: str | None = None,
        pooled: bool = False,
    ):
        where = _IN_BUCKET[bucket].format(partner=partner_id)
        if bucket == POOL and pooled:  # the event has allocations: say it was the pool
            where = " in the open pool"
        super().__init__(
            f"Not enough seats left{where}: {requested} requested, {available} available."
        )
        self.event_id = event_id
        self.requested = requested
        self.available = available
        self.bucket = bucket


class HoldLimitReached(DomainError):
    """A partner's live holds of one event would exceed its limit (PARTNER_MAX_HELD_SEATS,
    or its allocation's own): however it cycles holds, it counts what is held now."""

    def __init__(self, event_id: str, partner_id: str, requested: int, held: int, limit: int):
        super().__init__(
            f"Partner '{partner_id}' holds {held} seats of event '{event_id}' and may hold at "
            f"most {limit} at once: {requested} more refused."
        )
        self.event_id = event_id
        self.requested, self.held, self.limit = requested, held, limit


class PoolLimitReached(DomainError):
    """A partner would have more of the open pool than PARTNER_MAX_POOL_SEATS allows."""

    def __init__(self, event_id: str, partner_id: str, requested: int, used: int, limit: int):
        super().__init__(
            f"Partner '{partner_id}' has {used} seats of the open pool of event '{event_id}' and "
            f"may have at most {limit}: {requested} more refused."
        )
        self.event_id = event_id
        self.requested, self.used, self.limit = requested, used, limit


class AllocationNotFound(DomainError):
    def __init__(self, event_id: str, partner_id: str):
        super().__init__(f"Event '{event_id}' has no allocation for partner '{partner_id}'.")
        self.event_id = event_id


class AllocationInUse(DomainError):
    """An allocation cannot shrink below the seats taken and held from it."""

    def __init__(self, event_id: str, partner_id: str, seats: int, used: int):
        super().__init__(
            f"The allocation of partner '{partner_id}' cannot be {seats} seats: {used} are "
            "taken or held from it."
        )
        self.event_id = event_id


class AllocationTooLarge(DomainError):
    """Allocations cannot set aside more seats than the open pool has left."""

    def __init__(self, event_id: str, partner_id: str, seats: int, most: int):
        super().__init__(
            f"The allocation of partner '{partner_id}' cannot be {seats} seats: event "
            f"'{event_id}' can give it at most {most} (the rest are reserved, held or allocated)."
        )
        self.event_id = event_id
        self.most = most


class TooManyAllocations(DomainError):
    def __init__(self, event_id: str, most: int):
        super().__init__(f"Event '{event_id}' already has {most} allocations, the most it may.")
        self.event_id = event_id


class HoldExpired(DomainError):
    """The hold's time ran out: its seats went back, and it cannot be confirmed or extended."""

    def __init__(self, reservation_id):
        super().__init__(f"Hold '{reservation_id}' has expired; its seats were released.")
        self.reservation_id = reservation_id


class NotHeld(DomainError):
    """Confirm or extend of something that is not a hold any more (released, cancelled, or
    for extend: already confirmed)."""

    def __init__(self, reservation_id, status: str):
        super().__init__(f"Reservation '{reservation_id}' is {status}, not held.")
        self.reservation_id = reservation_id


class OutcomeUnknown(DomainError):
    """The database may or may not have committed (connection lost at COMMIT, or the batch
    was interrupted): never retried automatically, since a retry could book twice."""

    def __init__(self, subject: str):
        super().__init__(
            f"The outcome of this change to {subject} is unknown; "
            "check the reservation before retrying."
        )
        self.subject = subject


class DeadlinePassed(DomainError):
    """The request's deadline passed while it waited its turn: nothing was written."""

    def __init__(self, subject: str):
        super().__init__(f"The change to {subject} could not be made in time; retry later.")
        self.subject = subject


class VersionConflict(DomainError):
    """The event changed between our read and our compare-and-swap: retry from a fresh read."""

    def __init__(self, event_id: str):
        super().__init__(f"Event '{event_id}' changed concurrently; please retry.")
        self.event_id = event_id


class EventExists(DomainError):
    def __init__(self, event_id: str):
        # Ids are looked up exactly, but two may not differ only in case (GALA beside gala).
        super().__init__(f"Event '{event_id}' already exists (or one differing only in case).")
        self.event_id = event_id


class SeatsAlreadyReserved(DomainError):
    """An event cannot shrink below the seats its confirmed reservations hold."""

    def __init__(self, event_id: str, requested_total: int, reserved: int, allocated: bool = False):
        super().__init__(
            f"totalSeats cannot be {requested_total}: {reserved} seats are already reserved"
            + (" or allocated." if allocated else ".")
        )
        self.event_id = event_id


class PreconditionFailed(DomainError):
    """If-Match named a version the event no longer has: nothing was written."""

    def __init__(self, event_id: str, version: int):
        super().__init__(f"Event '{event_id}' is at version {version}, not the one If-Match names.")
        self.event_id = event_id
        self.version = version


class IdempotencyKeyInFlight(DomainError):
    def __init__(self, key: str):
        super().__init__(
            f"A request with Idempotency-Key '{key}' is still being processed; retry later."
        )


class IdempotencyKeyReused(DomainError):
    def __init__(self, key: str):
        super().__init__(f"Idempotency-Key '{key}' was already used with a different request.")


class UnknownPartner(DomainError):
    """An operator named a partnerId that has no partner account (AUTH_MODE=keys)."""

    def __init__(self, partner_id: str):
        super().__init__(
            f"Partner '{partner_id}' has no account; an operator reserves and allots seats only "
            "for partners that exist (ticketboss partner create)."
        )
        self.partner_id = partner_id


class InvalidPartnerId(DomainError):
    """A partner account's id that breaks the rule (domain.access.PARTNER_ID_RULE)."""


class TooManyAuthFailures(DomainError):
    """The client's address sent too many bad keys lately: refused before any look-up."""

    def __init__(self, retry_after: int):
        super().__init__(
            f"Too many failed authentications from this address; retry in {retry_after} s."
        )
        self.retry_after = retry_after


class WebhookEndpointNotFound(DomainError):
    """No such endpoint, or another partner's: the same answer, so none is confirmed."""

    def __init__(self, endpoint_id: str):
        super().__init__(f"No webhook endpoint with id '{endpoint_id}'.")
        self.endpoint_id = endpoint_id


class WebhookDeliveryNotFound(DomainError):
    def __init__(self, endpoint_id: str, delivery_id: int):
        super().__init__(f"Webhook endpoint '{endpoint_id}' has no delivery {delivery_id}.")
        self.endpoint_id = endpoint_id
        self.delivery_id = delivery_id


class TooManyWebhookEndpoints(DomainError):
    """A partner may register at most WEBHOOK_ENDPOINTS_PER_PARTNER endpoints."""

    def __init__(self, most: int):
        super().__init__(
            f"At most {most} webhook endpoints may be registered (WEBHOOK_ENDPOINTS_PER_PARTNER); "
            "delete one first."
        )
        self.most = most


class WebhooksNotConfigured(DomainError):
    """No WEBHOOK_SECRET_KEYS: no secret could be stored, so no endpoint is registered."""

    def __init__(self):
        super().__init__(
            "Webhooks are not configured on this service: its operator has to set "
            "WEBHOOK_SECRET_KEYS (the keys that encrypt endpoint secrets)."
        )
