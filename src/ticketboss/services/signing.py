"""Standard Webhooks v1 symmetric signatures, over the exact bytes sent.

Written with hmac/hashlib rather than the `standardwebhooks` library on purpose: the tests
verify these headers with that library, an independent implementation of the spec.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from ticketboss.services.secrets import SECRET_PREFIX

USER_AGENT = "TicketBoss-Webhooks/1"


def _key(secret: str) -> bytes:
    """The HMAC key of a "whsec_" secret: the bytes its base64 part encodes."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is 'whsec_' followed by standard base64") from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def signature(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value: "v1,<base64 HMAC-SHA256>" per secret, space-separated."""
    # A lone str is a Sequence[str] too: it would sign with each of its characters.
    if isinstance(secrets, str) or not secrets:
        raise ValueError("signature() takes a non-empty list of secrets")
    content = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(_key(secret), content, hashlib.sha256)).decode()
        for secret in secrets
    )


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery of `body`, signed with every secret given (rotation)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
