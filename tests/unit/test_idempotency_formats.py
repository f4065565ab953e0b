"""An Idempotency-Key's scope and fingerprint are stored in idempotency_keys: a retry after an
upgrade must find the answer an earlier release kept. These are the formats as stored since
they were introduced (computed by that code, pinned here)."""

from __future__ import annotations

import uuid

import pytest

from ticketboss.domain import ANYONE, Principal, Role
from ticketboss.services.idempotency import IdempotencyKey

RID = uuid.UUID("4db040cf-bc7c-4e2c-acb6-6a85deda3142")
PARTNER = Principal("abc-corp", Role.PARTNER)
OPERATOR = Principal("ops", Role.OPERATOR)


@pytest.mark.parametrize(
    ("built", "fingerprint"),
    [
        (
            IdempotencyKey.for_reserve(PARTNER, "k1", "gala", "abc-corp", 3),
            "4c64a21dc27723ccb281c3fae6a9b9ec38ffef76b1e49dbd4a0f999fd78a60ad",
        ),
        (
            IdempotencyKey.for_hold(PARTNER, "k1", "gala", "abc-corp", 3, 600),
            "087f8cf8bed47c1d3f611e027707f2c975123f25ba84374e28387e8cfdee978f",
        ),
        (
            IdempotencyKey.for_hold(PARTNER, "k1", "gala", "abc-corp", 3, None),
            "e8d1fcb1e830cacaf56a5679eef2a896599358f1520e78a82025ad1c3254a905",
        ),
        (
            IdempotencyKey.for_confirm(PARTNER, "k1", "gala", RID),
            "63b491954b42573d94af5b51a17be365387373e5c4680033ce4bde5748c54c33",
        ),
        (
            IdempotencyKey.for_extend(PARTNER, "k1", "gala", RID, 300),
            "cd1931ad2d51b6956a6341849dc5f2cf8c8bddbcc7ccbf2628f461791084703b",
        ),
        (
            IdempotencyKey.for_cancel(PARTNER, "k1", "gala", RID),
            "c4d17409a9665fbf4b30f64c75cb62e564c9477222eea978dbae5fbb39e48ea3",
        ),
    ],
)
def test_every_kind_of_request_keeps_its_stored_fingerprint(built, fingerprint):
    assert built.key == "k1"
    assert built.fingerprint == fingerprint


def test_scopes_are_the_holder_then_what_the_request_names():
    assert IdempotencyKey.for_reserve(PARTNER, "k", "gala", "abc-corp", 1).scope == (
        "partner:abc-corp:partner:abc-corp"
    )
    assert IdempotencyKey.for_reserve(OPERATOR, "k", "gala", "abc-corp", 1).scope == (
        "operator:ops:partner:abc-corp"
    )
    assert IdempotencyKey.for_cancel(PARTNER, "k", "gala", RID).scope == (
        f"partner:abc-corp:reservation:{RID}"
    )
    # AUTH_MODE=open: no holder, only what the request names.
    assert IdempotencyKey.for_hold(ANYONE, "k", "gala", "abc-corp", 1, None).scope == (
        "partner:abc-corp"
    )
    assert IdempotencyKey.for_confirm(ANYONE, "k", "gala", RID).scope == f"reservation:{RID}"
