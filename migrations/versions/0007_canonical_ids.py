"""Partner ids in one canonical spelling; no two event ids that differ only in case

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 10:00:00

A partner account's id obeys the rule of domain.access.PARTNER_ID_RULE (1-64 lowercase
ASCII letters, digits, '-', '_' and '.', a letter or digit first), kept from now on by a
CHECK constraint. An existing id that breaks it becomes its NFKC lower-case when that obeys
the rule and nothing has it yet (no other partner, no reservation's partnerId): partners,
api_keys and reservations change in this transaction, and so do the Idempotency-Key scopes
its keys made (`<role>:<id>:…`, and an operator's `…:partner:<id>`), so a retry across the
migration never books twice (a retried reservation or hold answers 422: its stored
fingerprint holds the old spelling; cancels, confirms and extends replay as before). Scopes of
AUTH_MODE=open (`partner:<id>`) stay: those clients send their own spelling again.

Event ids stay exact, but a unique index on lower(event_id) refuses a second event whose id
differs from one only in case.

Anything it cannot fix (an id with no canonical spelling, one whose spelling is taken, event
ids that differ only in case) stops it before it changes anything, naming the ids and what to
do. Not additive: stop the old workers first (they would still let an operator reserve for a
partner without an account). The downgrade drops the constraint and the index; renamed ids
keep their new spelling, which every older revision accepts.
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RULE = "1-64 lowercase ASCII letters, digits, '-', '_' and '.', a letter or digit first"
CANONICAL = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
CHECKS = {
    "postgresql": "partner_id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'",
    # SQLite has no regular expressions; GLOB is case-sensitive and knows character classes.
    "sqlite": "length(partner_id) BETWEEN 1 AND 64 AND partner_id GLOB '[a-z0-9]*' "
    "AND partner_id NOT GLOB '*[^a-z0-9._-]*'",
}
SHOWN = 20  # ids named in a message; the rest are counted


def upgrade() -> None:
    conn = op.get_bind()
    partner_ids = conn.execute(sa.text("SELECT partner_id FROM partners")).scalars().all()
    reserved_for = set(
        conn.execute(sa.text("SELECT DISTINCT partner_id FROM reservations")).scalars()
    )
    renames, unfit, taken = plan(partner_ids, reserved_for)
    doubled = sorted(
        conn.execute(
            sa.text(
                "SELECT event_id FROM events WHERE lower(event_id) IN (SELECT lower(event_id) "
                "FROM events GROUP BY lower(event_id) HAVING count(*) > 1)"
            )
        ).scalars()
    )
    if unfit or taken or doubled:
        raise CommandError(refusal(unfit, taken, doubled))
    for old, new in renames.items():
        rename(conn, old, new)
    with op.batch_alter_table("partners") as batch:
        batch.create_check_constraint(
            op.f("ck_partners_partner_id_canonical"), CHECKS[conn.dialect.name]
        )
    op.create_index("uq_events_lower_event_id", "events", [sa.text("lower(event_id)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_events_lower_event_id", table_name="events")
    with op.batch_alter_table("partners") as batch:
        batch.drop_constraint(op.f("ck_partners_partner_id_canonical"), type_="check")


def plan(partner_ids: Sequence[str], reserved_for: set[str]):
    """(renames old → new, ids with no canonical spelling, ids whose spelling is taken)."""
    canonical = {p: unicodedata.normalize("NFKC", p).lower() for p in partner_ids}
    spellings = Counter(canonical.values())
    renames: dict[str, str] = {}
    unfit: list[str] = []
    taken: list[str] = []
    for old, new in sorted(canonical.items()):
        if old == new and CANONICAL.fullmatch(old):
            continue
        if not CANONICAL.fullmatch(new):
            unfit.append(old)
        elif spellings[new] > 1 or new in reserved_for:
            taken.append(old)  # two partners, or two partners' reservations, would merge
        else:
            renames[old] = new
    return renames, unfit, taken


def rename(conn, old: str, new: str) -> None:
    """One partner's new id everywhere it is written (the new row first: keys refer to it)."""
    ids = {"old": old, "new": new}
    conn.execute(
        sa.text(
            "INSERT INTO partners (partner_id, created_at) "
            "SELECT :new, created_at FROM partners WHERE partner_id = :old"
        ),
        ids,
    )
    conn.execute(sa.text("UPDATE api_keys SET partner_id = :new WHERE partner_id = :old"), ids)
    conn.execute(sa.text("UPDATE reservations SET partner_id = :new WHERE partner_id = :old"), ids)
    conn.execute(sa.text("DELETE FROM partners WHERE partner_id = :old"), ids)
    # Idempotency-Key scopes (api.writes.key_scope): the key's holder leads, `<role>:<id>:`;
    # the partner an operator reserved for ends it, `…:partner:<id>`.
    for role in ("partner", "operator"):
        head = f"{role}:{old}:"
        conn.execute(
            sa.text(
                "UPDATE idempotency_keys SET scope = :new_head || substr(scope, :rest) "
                "WHERE substr(scope, 1, :n) = :head"
            ),
            {"head": head, "new_head": f"{role}:{new}:", "n": len(head), "rest": len(head) + 1},
        )
    tail = f":partner:{old}"
    conn.execute(
        sa.text(
            "UPDATE idempotency_keys SET scope = substr(scope, 1, length(scope) - :n) || :new_tail "
            "WHERE length(scope) > :n AND substr(scope, length(scope) - :n + 1) = :tail"
        ),
        {"tail": tail, "new_tail": f":partner:{new}", "n": len(tail)},
    )


def refusal(unfit: list[str], taken: list[str], doubled: list[str]) -> str:
    lines = ["Migration 0007 stopped; nothing was changed."]
    if unfit:
        lines.append(f"Partner ids with no canonical spelling ({RULE}): {names(unfit)}.")
    if taken:
        lines.append(
            "Partner ids whose canonical spelling (NFKC, lower-case) another partner or "
            f"another partnerId's reservations already have: {names(taken)}."
        )
    if unfit or taken:
        lines.append(
            "  Give each an id of your choosing, in one transaction: INSERT INTO partners the "
            "new id, UPDATE api_keys and reservations SET partner_id = '<new>' WHERE "
            "partner_id = '<old>', DELETE the old partner. Or DELETE FROM partners a partner "
            "that has no keys and is not needed: its reservations stay as they are "
            "(AUTH_MODE=open uses no partner rows)."
        )
    if doubled:
        lines.append(
            f"Event ids that differ only in case: {names(doubled)}.\n  Rename one of each "
            "(INSERT the event under a new id, UPDATE its reservations' event_id, DELETE the "
            "old row) or delete the one not in use."
        )
    lines.append("Then migrate again.")
    return "\n".join(lines)


def names(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:SHOWN])
    return shown if len(ids) <= SHOWN else f"{shown} and {len(ids) - SHOWN} more"
