"""The outbox: each batch's notifications, decided from its plan and written by its own
transaction (one multi-row INSERT), so that a notification exists if and only if its change
committed. Changes no request made are told the same way: holds reclaimed by a batch, a
summary or the sweep, an operator's resize or allocation change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from ticketboss.api.views import shown
from ticketboss.domain import Allocation, Reservation, Status
from ticketboss.domain.batch import (
    Allotted,
    Confirmed,
    Extended,
    Granted,
    Plan,
    Read,
    Released,
    Resized,
    Unallot,
    Unallotted,
    moves_version,
)
from ticketboss.domain.notifications import Note, Type


def notes(read: Read, changes: Sequence[Any], decided: Plan, outcomes: Sequence[Any]) -> list[Note]:
    """The notifications of a batch, in the order its changes were made, each at the
    version that change left the event at (lapsed holds are reclaimed first)."""
    assert decided.before is not None
    event_id, version, told = decided.before.event_id, decided.before.version, []
    lapsed = {h.reservation_id: h for h in read.lapsed.reservations} if read.lapsed else {}
    for reservation_id in decided.expired:
        version += 1
        hold = replace(lapsed[reservation_id], status=Status.EXPIRED)
        told.append(Note(Type.HOLD_EXPIRED, version, hold, event_id))
    for change, decision, outcome in zip(changes, decided.outcomes, outcomes, strict=True):
        if not moves_version(decision):
            continue
        version += 1
        note = _note(change, decision, outcome, read.now)
        told.append(Note(note[0], version, note[1], event_id))
    return told


def _note(change, decision, outcome, now: datetime) -> tuple[Type, Any]:
    """A written decision's type and subject, as the object stands after it."""
    if isinstance(decision, Granted):
        assert isinstance(outcome, Reservation)
        held = outcome.status is Status.HELD
        return (Type.HOLD_CREATED if held else Type.RESERVATION_CONFIRMED), outcome
    if isinstance(decision, Confirmed):
        return Type.RESERVATION_CONFIRMED, decision.reservation
    if isinstance(decision, Extended):
        return Type.HOLD_EXTENDED, decision.reservation
    if isinstance(decision, Released):
        before = decision.reservation
        # As store/queries.mark_cancelled leaves it: a released hold has no expiry.
        after = replace(before, status=Status.CANCELLED, cancelled_at=now, expires_at=None)
        held = before.status is Status.HELD
        return (Type.HOLD_RELEASED if held else Type.RESERVATION_CANCELLED), after
    if isinstance(decision, Resized):
        return Type.EVENT_UPDATED, decision.event
    if isinstance(decision, Allotted):
        return Type.ALLOCATION_UPDATED, decision.allocation
    if isinstance(decision, Unallotted):
        assert isinstance(change, Unallot)
        # Deleted: closed with the seats it still has in use, or gone (closed and empty).
        left = decision.event.allocations.get(change.partner_id)
        return Type.ALLOCATION_UPDATED, left or Allocation(change.partner_id, 0, closed=True)
    raise TypeError(f"no notification for {type(decision).__name__}")


def rows(told: Sequence[Note], at: datetime) -> list[dict[str, Any]]:
    """The outbox rows of the notes: `data` is each subject as an operator's GET shows it."""
    return [
        {
            "type": note.type.value,
            "event_id": note.event_id,
            "partner_id": note.partner_id,
            "version": note.version,
            "created_at": at,
            "data": orjson.dumps(shown(note.subject)).decode(),
        }
        for note in told
    ]
