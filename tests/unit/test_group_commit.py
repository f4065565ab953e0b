"""The batching mechanism on its own: real threads, a recording commit function."""

from __future__ import annotations

import threading
import time

import pytest

from ticketboss import deadline
from ticketboss.domain import DeadlinePassed
from ticketboss.services.group_commit import LEAD_FLOOR_SECONDS, GroupCommit


class Interrupted(Exception):
    pass


class Recorder:
    """A commit function that records its batches and can be held open."""

    def __init__(self, fail_on=None):
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, key, requests):
        self.entered.set()
        self.release.wait(timeout=10)
        self.batches.append(list(requests))
        if self.fail_on is not None and self.fail_on in requests:
            raise RuntimeError("boom")
        return [f"{key}:{r}" for r in requests]


def submit_all(group, key, requests, results):
    threads = []
    for r in requests:
        t = threading.Thread(target=lambda r=r: results.__setitem__(r, _outcome(group, key, r)))
        t.start()
        threads.append(t)
    return threads


class Group(GroupCommit):
    """The group commit with one commit function for every submit, as these tests use it."""

    def __init__(self, commit, max_batch, interrupted):
        super().__init__(max_batch, interrupted)
        self._run = commit

    def submit(self, key, request):
        return super().submit(key, request, self._run)


def _outcome(group, key, request):
    try:
        return group.submit(key, request)
    except Exception as exc:
        return exc


def wait_until(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_requests_that_queue_behind_a_leader_commit_together_in_arrival_order():
    commit = Recorder()
    group = Group(commit, max_batch=100, interrupted=Interrupted)
    results = {}
    leader = submit_all(group, "e", [0], results)
    commit.entered.wait(5)  # the leader's transaction is open: the rest must queue
    followers = []
    for r in range(1, 21):
        followers += submit_all(group, "e", [r], results)
        wait_until(lambda r=r: len(group._queues["e"]) == r)
    commit.release.set()
    for t in leader + followers:
        t.join(10)
    assert commit.batches == [[0], list(range(1, 21))]
    assert results == {r: f"e:{r}" for r in range(21)}
    assert group._queues == {}  # nobody leads: the next request starts afresh


def test_a_batch_never_exceeds_the_maximum_and_every_request_is_answered():
    commit = Recorder()
    commit.release.set()
    group = Group(commit, max_batch=3, interrupted=Interrupted)
    results = {}
    threads = submit_all(group, "e", list(range(50)), results)
    for t in threads:
        t.join(10)
    assert results == {r: f"e:{r}" for r in range(50)}
    assert all(len(batch) <= 3 for batch in commit.batches)
    assert sorted(r for batch in commit.batches for r in batch) == list(range(50))


def test_a_failing_batch_raises_in_every_request_of_it_and_the_next_batch_still_runs():
    commit = Recorder(fail_on=1)
    group = Group(commit, max_batch=100, interrupted=Interrupted)
    results = {}
    leader = submit_all(group, "e", [0], results)
    commit.entered.wait(5)
    followers = submit_all(group, "e", [1], results)
    wait_until(lambda: len(group._queues["e"]) == 1)
    followers += submit_all(group, "e", [2], results)
    wait_until(lambda: len(group._queues["e"]) == 2)
    commit.release.set()
    for t in leader + followers:
        t.join(10)
    assert results[0] == "e:0"
    assert [str(results[1]), str(results[2])] == ["boom", "boom"]  # the batch's own error
    assert commit.batches == [[0], [1, 2]]
    submit_all(group, "e", [3], results)[0].join(10)
    assert results[3] == "e:3"


def test_different_events_do_not_wait_for_each_other():
    gate = threading.Event()

    def commit(key, requests):
        if key == "a":
            gate.wait(10)
        return [f"{key}:{r}" for r in requests]

    group = Group(commit, max_batch=100, interrupted=Interrupted)
    results = {}
    held = submit_all(group, "a", [0], results)
    wait_until(lambda: "a" in group._queues)
    assert group.submit("b", 9) == "b:9"  # while event "a"'s batch is still open
    assert 0 not in results
    gate.set()
    held[0].join(10)
    assert results[0] == "a:0"


@pytest.mark.parametrize("max_batch", [0, 1])
def test_a_maximum_of_one_commits_each_request_alone(max_batch):
    commit = Recorder()
    commit.release.set()
    group = Group(commit, max_batch=max_batch, interrupted=Interrupted)
    results = {}
    for t in submit_all(group, "e", list(range(10)), results):
        t.join(10)
    assert all(len(batch) == 1 for batch in commit.batches) and len(commit.batches) == 10


GEVENT_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import gevent
from ticketboss import deadline
from ticketboss.domain import DeadlinePassed
from ticketboss.services.group_commit import LEAD_FLOOR_SECONDS, GroupCommit

def commit(key, requests):
    gevent.sleep(0.2)  # the leader's transaction is slow: followers queue
    return [f"{key}:{r}" for r in requests]

group = GroupCommit(max_batch=1, interrupted=RuntimeError)
leader = gevent.spawn(group.submit, "e", 0, commit)
gevent.sleep(0.05)
doomed = gevent.spawn(group.submit, "e", 1, commit)   # next in line for the lead
behind = gevent.spawn(group.submit, "e", 2, commit)
gevent.sleep(0.05)
doomed.kill()                                 # gives up while queued
print(leader.get(timeout=5), behind.get(timeout=5), group.submit("e", 3, commit))
"""


def test_a_queued_request_killed_under_gevent_does_not_strand_the_ones_behind_it():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["e:0", "e:2", "e:3"]


def _within(seconds, group, key, request):
    with deadline.within(seconds):
        return _outcome(group, key, request)


def test_a_queued_request_leaves_the_queue_at_its_deadline_with_nothing_written():
    recorder = Recorder()
    group = Group(recorder, max_batch=10, interrupted=Interrupted)
    leader = threading.Thread(target=lambda: _outcome(group, "e", 0))
    leader.start()
    assert recorder.entered.wait(5)
    began = time.monotonic()
    outcome = _within(0.2, group, "e", 1)  # queued behind a batch that does not end
    assert 0.2 <= time.monotonic() - began < 1.0
    assert isinstance(outcome, DeadlinePassed)
    recorder.release.set()
    leader.join(5)
    assert recorder.batches == [[0]]  # it never joined a batch


def test_a_request_whose_batch_outlives_its_deadline_is_told_the_outcome_is_unknown():
    """A request taken into a batch that is still running at its deadline (as a COMMIT on
    the wire would be) cannot know whether it will commit: Interrupted, at its deadline."""
    first, second = Recorder(), Recorder()
    calls = iter([first, second])
    group = Group(lambda key, requests: next(calls)(key, requests), 10, interrupted=Interrupted)
    results: dict = {}

    def run(request, seconds=None):
        began = time.monotonic()
        outcome = (
            _within(seconds, group, "e", request) if seconds else _outcome(group, "e", request)
        )
        results[request] = (outcome, time.monotonic() - began)

    threads = [threading.Thread(target=run, args=(0,))]
    threads[0].start()
    assert first.entered.wait(5)  # 0 leads the first batch, which waits
    for request in (1, 2):  # queued in that order
        threads.append(threading.Thread(target=run, args=(request, 0.5)))
        threads[-1].start()
        time.sleep(0.05)
    first.release.set()  # the first batch commits; 1 leads the second, which hangs
    assert second.entered.wait(5)
    threads[2].join(5)
    outcome, took = results[2]
    assert isinstance(outcome, Interrupted) and took < 1.0
    second.release.set()
    for thread in threads:
        thread.join(5)
    assert results[0][0] == "e:0" and results[1][0] == "e:1"
    assert second.batches == [[1, 2]]  # 2 was in that batch: its outcome was truly unknown


def test_a_request_handed_the_lead_with_almost_no_time_left_passes_it_on():
    """A batch runs on its leader's time: the next request leads instead, with its own."""
    first, second = Recorder(), Recorder()
    second.release.set()
    calls = iter([first, second])
    group = Group(lambda key, requests: next(calls)(key, requests), 10, interrupted=Interrupted)
    results: dict = {}

    def run(request, seconds):
        results[request] = _within(seconds, group, "e", request)

    leader = threading.Thread(target=run, args=(0, 5.0))
    leader.start()
    assert first.entered.wait(5)
    late = threading.Thread(target=run, args=(1, LEAD_FLOOR_SECONDS + 0.15))
    late.start()
    time.sleep(0.05)
    fresh = threading.Thread(target=run, args=(2, 5.0))
    fresh.start()
    time.sleep(0.15)  # 1 now has less than the floor left; it is next in line
    first.release.set()
    for thread in (leader, late, fresh):
        thread.join(5)
    assert results[0] == "e:0" and results[2] == "e:2"
    assert isinstance(results[1], DeadlinePassed)
    assert second.batches == [[2]]  # 1 wrote nothing
