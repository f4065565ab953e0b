"""Who a request acts as, and what that lets it see and change (no Flask, no SQLAlchemy)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ticketboss.domain.errors import Forbidden


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
        return None if self.is_operator else self.partner_id

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden("Only an operator key may do this.")


# AUTH_MODE=open: the Node.js contract, where every client may do everything.
ANYONE = Principal(None, Role.OPERATOR)
