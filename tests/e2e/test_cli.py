"""`ticketboss partner …`, as an operator runs it: the key alone on stdout, messages on
stderr, never the key in a list."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ticketboss.services.partners import KEY_SHAPE

TICKETBOSS = Path(sys.executable).parent / "ticketboss"


@pytest.fixture
def run(database_url):
    def ticketboss(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "DATABASE_URL": database_url}
        return subprocess.run(
            [TICKETBOSS, *args], env=env, capture_output=True, text=True, timeout=60
        )

    return ticketboss


def test_create_prints_the_key_alone_list_never_shows_it_and_revoke_stops_it(app, run):
    partner_id = f"cli-{uuid.uuid4().hex[:8]}"
    created = run("partner", "create", partner_id)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == f"{key}\n" and KEY_SHAPE.fullmatch(key)
    assert f"created partner {partner_id}" in created.stderr and key not in created.stderr

    operator = run("partner", "create", partner_id, "--operator")
    assert operator.returncode == 0 and "created partner" not in operator.stderr  # it existed
    assert operator.stdout.strip() != key

    listed = run("partner", "list")
    assert listed.returncode == 0
    mine = [line for line in listed.stdout.splitlines() if line.startswith(partner_id)]
    assert len(mine) == 2 and key[:11] in mine[0]
    assert key not in listed.stdout and key[11:] not in listed.stdout
    assert {line.split()[3] for line in mine} == {"partner", "operator"}
    key_id = mine[0].split()[1]

    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/reservations", headers=auth).status_code == 200
    revoked = run("partner", "revoke", key_id)
    assert revoked.returncode == 0 and f"revoked {key_id}" in revoked.stderr
    again = run("partner", "revoke", key_id)
    assert again.returncode == 1 and "no active key" in again.stderr
    # This test's worker still trusts the key for AUTH_CACHE_SECONDS; a new one refuses it.
    from ticketboss import create_app, services_of

    fresh = create_app(services_of(app).settings)
    try:
        assert fresh.test_client().get("/api/reservations", headers=auth).status_code == 401
    finally:
        services_of(fresh).engine.dispose()
    assert "-" not in [
        line.split()[-1] for line in run("partner", "list").stdout.splitlines() if key_id in line
    ]


@pytest.mark.parametrize(
    "partner_id", ["", "x" * 65, "-abc", "a b", "abc\n", "\u0430bc-corp", "ABC"]
)
def test_create_refuses_a_partner_id_that_is_not_canonical_in_one_line_with_the_rule(
    run, partner_id
):
    refused = run("partner", "create", "--", partner_id)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "lowercase ASCII letters" in refused.stderr


def test_create_never_folds_case_but_names_the_canonical_spelling(run):
    for given in ("ABC-Corp", "\uff41\uff42\uff43-corp"):  # upper case, full-width letters
        refused = run("partner", "create", given)
        assert refused.returncode == 2
        assert "its canonical spelling is 'abc-corp'" in refused.stderr
    look_alike = run("partner", "create", "\u0430bc-corp")  # a Cyrillic a
    assert "non-ASCII characters (U+0430)" in look_alike.stderr
    listed = {line.split()[0] for line in run("partner", "list").stdout.splitlines()}
    assert not listed & {"ABC-Corp", "\uff41\uff42\uff43-corp", "\u0430bc-corp"}


def test_seed_refuses_an_event_id_differing_only_in_case_in_one_line(app, run):
    event_id = f"Seed-{uuid.uuid4().hex[:8]}"
    assert run("seed", "--event-id", event_id.lower(), "--seats", "5").returncode == 0
    refused = run("seed", "--event-id", event_id, "--seats", "5")
    assert refused.returncode == 1
    assert "differs from it only in case" in refused.stderr
    assert "Traceback" not in refused.stderr
