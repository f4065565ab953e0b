"""Who a request acts as, and what that lets it see and change (no Flask, no SQLAlchemy)."""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass

from ticketboss.domain.errors import Forbidden, InvalidPartnerId

# A partner account's id is its identity: one spelling, nothing that passes for another (no
# case, no look-alike letters of other scripts, no second Unicode normal form). Migration
# 0007 puts the same rule in a CHECK constraint on partners.
PARTNER_ID_RULE = (
    "1-64 characters of lowercase ASCII letters, digits, '-', '_' and '.', "
    "starting with a letter or digit"
)
_PARTNER_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def is_partner_id(partner_id: str) -> bool:
    """Whether a partner account may have this id (PARTNER_ID_RULE)."""
    return _PARTNER_ID.fullmatch(partner_id) is not None


def check_partner_id(partner_id: str) -> None:
    """InvalidPartnerId unless the id obeys PARTNER_ID_RULE. Never folded: `ABC` is refused,
    with a hint that `abc` is its canonical spelling."""
    if is_partner_id(partner_id):
        return
    canonical = unicodedata.normalize("NFKC", partner_id).lower()
    foreign = sorted({f"U+{ord(c):04X}" for c in partner_id if not c.isascii()})
    hint = ""
    if is_partner_id(canonical):
        hint = f"; its canonical spelling is '{canonical}'"
    elif foreign:  # a look-alike of another script reads like ASCII: name the intruders
        hint = f"; it holds non-ASCII characters ({', '.join(foreign[:3])})"
    raise InvalidPartnerId(f"partner id {partner_id!r} refused: {PARTNER_ID_RULE}{hint}")


class Role(enum.StrEnum):
    PARTNER = "partner"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Principal:
    """The holder of a key: a partner acts for itself, an operator for any partner.

    `partner_id` is None only for ANYONE, the keyless client of AUTH_MODE=open.
    """

    partner_id: str | None
    role: Role

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def acting_for(self, partner_id: str | None) -> str | None:
        """The partner a reservation is made for: a partner key's own (a body that names
        another is Forbidden), or the one an operator names (its own when it names none)."""
        if self.is_operator:
            return partner_id if partner_id is not None else self.partner_id
        if partner_id is not None and partner_id != self.partner_id:
            raise Forbidden("A partner key reserves only for its own partnerId.")
        return self.partner_id

    def owner(self) -> str | None:
        """Whose reservations this principal may see and cancel: None means everyone's."""
        return EVERY_PARTNER if self.is_operator else self.partner_id

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden("Only an operator key may do this.")


# The owner that means every partner's reservations: what an operator's `owner()` is, and
# what internal callers (the sweep, tests of the services) pass explicitly.
EVERY_PARTNER: None = None

# AUTH_MODE=open: the Node.js contract, where every client may do everything.
ANYONE = Principal(None, Role.OPERATOR)
