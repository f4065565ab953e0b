"""The outbox on PostgreSQL: a group-committed batch writes its notifications in its own
transaction, so a notification exists exactly when its change committed. A batch of N
changes writes N rows at consecutive versions in that transaction; a batch rolled back (a
lost Idempotency-Key claim, an exception after the write) leaves none; a change that writes
nothing (a resize to what the event already is) tells nothing."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import event, func, select, text, update

from support.clock import JumpingClock
from support.database import EVENT_ID
from ticketboss.domain import IdempotencyKeyInFlight, NotEnoughSeats, Reservation
from ticketboss.services import IdempotencyKey, ReservationService, SeatRequest, idempotency
from ticketboss.services.reservations import Submitted
from ticketboss.store import queries
from ticketboss.store.tables import idempotency_keys, notifications, reservations


def last_id(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.coalesce(func.max(notifications.c.id), 0)))


def written_since(engine, after: int) -> list:
    """The default event's notifications with an id above `after`, in id order."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(notifications)
                .where(notifications.c.id > after, notifications.c.event_id == EVENT_ID)
                .order_by(notifications.c.id)
            )
        )


def version(engine) -> int:
    with engine.connect() as conn:
        return queries.load_event(conn, EVENT_ID).version


def xmin_of_reservation(engine, reservation_id: uuid.UUID) -> int:
    """The id of the transaction that wrote the reservation's row (PostgreSQL's xmin)."""
    with engine.connect() as conn:
        return conn.scalar(
            text("SELECT xmin::text::bigint FROM reservations WHERE id = :id"),
            {"id": reservation_id},
        )


def count_reservations(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(
            select(func.count())
            .select_from(reservations)
            .where(reservations.c.event_id == EVENT_ID)
        )


def test_n_reservations_in_one_batch_write_n_notifications_at_consecutive_versions_with_them(
    service,
):
    before, since = version(service.engine), last_id(service.engine)
    seats = [1, 2, 3, 4]
    outcomes = service.commit_batch(
        EVENT_ID, [*(SeatRequest(f"p{i}", n) for i, n in enumerate(seats)), SeatRequest("p9", 999)]
    )
    *granted, refused = outcomes
    assert all(isinstance(o, Reservation) for o in granted)
    assert isinstance(refused, NotEnoughSeats)  # refused: nothing to tell

    rows = written_since(service.engine, since)
    assert [r.type for r in rows] == ["reservation.confirmed"] * len(seats)
    assert [r.version for r in rows] == list(range(before + 1, before + len(seats) + 1))
    assert version(service.engine) == before + len(seats)
    assert [r.partner_id for r in rows] == [f"p{i}" for i in range(len(seats))]
    told = [json.loads(r.data) for r in rows]
    assert [t["reservationId"] for t in told] == [str(o.reservation_id) for o in granted]
    assert [t["seats"] for t in told] == seats
    # One transaction wrote them all, and the reservations with them.
    [xid] = {r.xid for r in rows}
    for reservation in granted:
        assert xmin_of_reservation(service.engine, reservation.reservation_id) == xid % 2**32


def test_lapsed_holds_a_batch_reclaims_are_told_first_each_at_its_own_version(
    pg_engine, pg_settings, service
):
    clock = JumpingClock()
    timed = ReservationService(pg_engine, pg_settings, clock)
    holds = [timed.hold(EVENT_ID, "p1", 1, ttl_seconds=60) for _ in range(2)]
    clock.jump(61)
    since = last_id(pg_engine)
    reserved = timed.reserve(EVENT_ID, "p2", 3)

    rows = written_since(pg_engine, since)
    assert [(r.type, r.version) for r in rows] == [
        ("hold.expired", 3),
        ("hold.expired", 4),
        ("reservation.confirmed", 5),
    ]
    expired = [json.loads(r.data) for r in rows[:2]]
    assert sorted(e["reservationId"] for e in expired) == sorted(
        str(h.reservation_id) for h in holds
    )
    assert {e["status"] for e in expired} == {"expired"}
    assert json.loads(rows[2].data)["reservationId"] == str(reserved.reservation_id)
    assert len({r.xid for r in rows}) == 1


def test_a_batch_that_lost_a_claim_rolls_back_its_notifications_and_tells_only_the_rest(
    service,
):
    key = IdempotencyKey.of("partner:p1", f"k-{uuid.uuid4().hex}", {"seats": 1})
    held = idempotency.claim(service.engine, service.settings, key)
    with service.engine.begin() as conn:  # its lease lapsed and a retry took the key over
        conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key == key.key)
            .values(owner=uuid.uuid4())
        )
    inserts: list[int] = []

    def count_outbox_inserts(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO NOTIFICATIONS"):
            inserts.append(len(parameters) if executemany else 1)

    since = last_id(service.engine)
    event.listen(service.engine, "before_cursor_execute", count_outbox_inserts)
    try:
        outcomes = service.commit_batch(
            EVENT_ID, [Submitted(SeatRequest("p1", 1), held), SeatRequest("p2", 2)]
        )
    finally:
        event.remove(service.engine, "before_cursor_execute", count_outbox_inserts)

    assert isinstance(outcomes[0], IdempotencyKeyInFlight)
    # The first attempt wrote both notifications and lost its claim: rolled back with it.
    # The second, without that request, wrote and committed one.
    assert len(inserts) == 2
    rows = written_since(service.engine, since)
    assert [(r.type, r.partner_id, r.version) for r in rows] == [("reservation.confirmed", "p2", 1)]
    assert json.loads(rows[0].data)["reservationId"] == str(outcomes[1].reservation_id)


class WorkerDied(Exception):
    pass


def test_a_batch_that_fails_after_writing_its_notifications_leaves_none(service):
    """The exception comes between the outbox INSERT and the COMMIT (at the next statement,
    which records the Idempotency-Key's answer): nothing of the batch remains."""
    key = IdempotencyKey.of("partner:p1", f"k-{uuid.uuid4().hex}", {"seats": 1})
    held = idempotency.claim(service.engine, service.settings, key)
    wrote: list[str] = []

    def die_after_the_outbox(conn, cursor, statement, parameters, context, executemany):
        if wrote:
            raise WorkerDied(statement)
        if statement.lstrip().upper().startswith("INSERT INTO NOTIFICATIONS"):
            wrote.append(statement)

    since = last_id(service.engine)
    event.listen(service.engine, "before_cursor_execute", die_after_the_outbox)
    try:
        with pytest.raises(WorkerDied):
            service.commit_batch(
                EVENT_ID, [Submitted(SeatRequest("p1", 1), held), SeatRequest("p2", 2)]
            )
    finally:
        event.remove(service.engine, "before_cursor_execute", die_after_the_outbox)

    assert wrote  # the notifications were written, in the transaction that then failed
    assert written_since(service.engine, since) == []
    assert version(service.engine) == 0 and count_reservations(service.engine) == 0


def test_a_resize_to_what_the_event_already_is_writes_no_notification(service):
    since = last_id(service.engine)
    unchanged = service.resize(EVENT_ID, name="Node.js Meet-up", total_seats=500)
    assert unchanged.version == 0
    assert written_since(service.engine, since) == []

    resized = service.resize(EVENT_ID, total_seats=600)
    [row] = written_since(service.engine, since)
    assert (row.type, row.partner_id, row.version) == ("event.updated", None, resized.version)
    assert json.loads(row.data)["totalSeats"] == 600


def test_an_allocation_set_again_as_it_is_writes_no_second_notification(service):
    since = last_id(service.engine)
    service.allot(EVENT_ID, "p1", 10)
    service.allot(EVENT_ID, "p1", 10)
    [row] = written_since(service.engine, since)
    assert (row.type, row.partner_id, row.version) == ("allocation.updated", "p1", 1)
    assert json.loads(row.data)["seats"] == 10
