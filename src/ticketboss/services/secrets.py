"""Webhook signing secrets: generated here, stored only encrypted (docs/webhooks.md)."""

from __future__ import annotations

import base64
import secrets
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

if TYPE_CHECKING:
    from ticketboss.config import Settings

SECRET_PREFIX = "whsec_"
# Standard Webhooks asks for 24–64 random bytes; 32 is HMAC-SHA256's own block of strength.
SECRET_BYTES = 32
# A ValueError rather than cryptography's InvalidToken (not one): callers handle a secret
# they cannot use as they handle a malformed one.
_UNREADABLE = (
    "the webhook secret was encrypted under a key no longer in WEBHOOK_SECRET_KEYS "
    "(or the stored token is damaged)"
)


def new_webhook_secret() -> str:
    """A fresh endpoint secret: "whsec_" and the standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


class SecretBox:
    """Webhook secrets encrypted at rest (cryptography's MultiFernet over WEBHOOK_SECRET_KEYS:
    the first key encrypts, every one decrypts)."""

    def __init__(self, keys: list[Fernet]):
        if not keys:
            raise ValueError("WEBHOOK_SECRET_KEYS holds no key")
        self._fernet = MultiFernet(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox | None:
        """The box for WEBHOOK_SECRET_KEYS (comma-separated, newest first); None when unset."""
        pieces = [piece.strip() for piece in settings.webhook_secret_keys.split(",")]
        pieces = [piece for piece in pieces if piece]  # a trailing comma is not a key
        if not pieces:
            return None
        keys = []
        for number, piece in enumerate(pieces, start=1):
            try:
                keys.append(Fernet(piece))
            except ValueError:  # binascii.Error is one too
                # `from None`: the chained error and its traceback must not carry the key.
                raise ValueError(
                    f"WEBHOOK_SECRET_KEYS: key {number} of {len(pieces)} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes, as Fernet.generate_key() makes)"
                ) from None
        return cls(keys)

    def encrypt(self, secret: str) -> str:
        """The secret encrypted under the first key, as a Fernet token."""
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The secret in a token made under any of the keys; ValueError if none opens it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ValueError(_UNREADABLE) from None

    def rotate(self, token: str) -> str:
        """The same secret re-encrypted under the first key, so older keys can be dropped."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise ValueError(_UNREADABLE) from None
