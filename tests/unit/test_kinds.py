"""The table of kinds and the planner's rules describe the same kinds of change."""

from ticketboss.domain.batch import RULES
from ticketboss.services.idempotency import Kept
from ticketboss.services.kinds import DONE, KINDS, REFUSALS


def test_every_kind_of_change_has_one_rule_and_one_row():
    assert set(KINDS) == set(RULES)


def test_every_kept_answer_is_a_done_kind_or_a_kept_refusal_never_both():
    assert set(DONE) | set(REFUSALS) == set(Kept)
    assert not set(DONE) & set(REFUSALS)
