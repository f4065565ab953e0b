"""Group commit: concurrent requests for one event in this process share one transaction.

The first request to arrive for an event becomes its leader. While the leader's transaction
runs, later requests queue behind it. When it commits, the leader answers its whole batch and
hands leadership to the oldest queued request, whose thread then runs the next batch with
everything that queued meanwhile. Requests are taken in arrival order (first come, first
served within the process); worker processes still race each other through the
compare-and-swap.

A queued request waits at most until its own deadline (ticketboss.deadline): still queued,
it leaves the queue unanswered (DeadlinePassed: nothing was written); already taken into a
batch that has not committed, its outcome is unknown. A batch runs on its leader's time, so
a request with almost none left hands the lead on instead.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

from ticketboss import deadline
from ticketboss.domain import DeadlinePassed

Request = TypeVar("Request")
Result = TypeVar("Result")
# A request with less time left than this does not lead a batch (which runs on its time).
LEAD_FLOOR_SECONDS = 0.1


class _Ticket(Generic[Request, Result]):
    __slots__ = ("leads", "outcome", "ready", "request")

    def __init__(self, request: Request):
        self.request = request
        self.ready = threading.Event()
        self.leads = False
        self.outcome: Result | BaseException | None = None


# What commits a batch: one outcome per request, in order, each a result or the error that
# request raises.
Commit = Callable[[str, list[Request]], Sequence[Result | BaseException]]


class GroupCommit(Generic[Request, Result]):
    """Batches requests that share a key; the caller names what commits a batch,
    `commit(key, requests) -> outcomes`, where it submits.

    An outcome that is an exception is raised in the thread of the request it belongs to.
    """

    def __init__(self, max_batch: int, interrupted: Callable[[str], Exception]):
        self._max_batch = max(1, max_batch)
        self._interrupted = interrupted  # the outcome of a batch whose leader was killed
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Ticket[Request, Result]]] = {}

    def submit(self, key: str, request: Request, commit: Commit[Request, Result]) -> Result:
        """Queue the request, wait for the batch that commits it, return its outcome. The
        request that leads the batch runs `commit` for all of it."""
        ticket: _Ticket[Request, Result] = _Ticket(request)
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:  # nobody leads this key: we do
                queue = self._queues[key] = deque()
                ticket.leads = True
            queue.append(ticket)
        if not ticket.leads:
            try:
                answered = ticket.ready.wait(deadline.remaining())
            except BaseException:  # killed while queued (a gevent timeout, a shutdown)
                self._abandon(key, ticket)
                raise
            if not answered and self._abandon(key, ticket):
                raise DeadlinePassed(f"event '{key}'")
            if not answered and not ticket.ready.is_set():
                raise self._interrupted(key)  # its batch is running: it may commit
        if ticket.leads and (deadline.remaining(1.0) or 0.0) < LEAD_FLOOR_SECONDS:
            # Its batch would run on its time, cut short for everyone in it: the lead goes
            # to the next request, and this one writes nothing.
            self._abandon(key, ticket)
            raise DeadlinePassed(f"event '{key}'")
        if ticket.leads:  # from the start, or handed over by the previous leader
            self._lead(key, commit)
        if isinstance(ticket.outcome, BaseException):
            raise ticket.outcome
        return cast(Result, ticket.outcome)  # answered: the leader set it

    def _lead(self, key: str, commit: Commit[Request, Result]) -> None:
        with self._lock:
            queue = self._queues[key]
            batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
        # Every ticket of the batch is answered and the lead handed on, whatever happens here.
        outcomes: Sequence[Result | BaseException] | None = None
        try:
            outcomes = commit(key, [t.request for t in batch])
        except Exception as exc:  # the whole batch failed: every request gets the error
            outcomes = [exc] * len(batch)
        finally:
            if outcomes is None:  # the leader was killed mid-batch (a timeout, a shutdown)
                outcomes = [self._interrupted(key) for _ in batch]
            successor = self._hand_over(key)
            for ticket, outcome in zip(batch, outcomes, strict=True):
                ticket.outcome = outcome
                ticket.ready.set()
            if successor is not None:
                successor.ready.set()

    def _abandon(self, key: str, ticket: _Ticket) -> bool:
        """A queued request gave up waiting: take it out, and if the lead had just been handed
        to it, hand the lead on so the requests behind it are not stranded. False if it was
        already taken into a batch (whose leader answers it)."""
        with self._lock:
            queue = self._queues.get(key)
            if queue is None or ticket not in queue:
                return False
            queue.remove(ticket)
            if not ticket.leads:
                return True
            if not queue:
                del self._queues[key]
                return True
            successor = queue[0]
            successor.leads = True
        successor.ready.set()
        return True

    def _hand_over(self, key: str) -> _Ticket | None:
        """The oldest queued request leads next; with none queued, the key is free again."""
        with self._lock:
            queue = self._queues[key]
            if not queue:
                del self._queues[key]
                return None
            queue[0].leads = True
            return queue[0]
