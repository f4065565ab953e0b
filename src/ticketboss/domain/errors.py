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


class NotEnoughSeats(DomainError):
    def __init__(self, event_id: str, requested: int, available: int):
        super().__init__(f"Not enough seats left: {requested} requested, {available} available.")
        self.event_id = event_id
        self.requested = requested
        self.available = available


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

    def __init__(self, event_id: str, requested_total: int, reserved: int):
        super().__init__(
            f"totalSeats cannot be {requested_total}: {reserved} seats are already reserved."
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
            f"Partner '{partner_id}' has no account; an operator reserves only for partners "
            "that exist (ticketboss partner create)."
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
