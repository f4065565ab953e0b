"""Webhook signatures check out with the standardwebhooks library; secrets survive key rotation."""

import base64
import time

import pytest
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ticketboss.config import Settings
from ticketboss.services.secrets import SecretBox, new_webhook_secret
from ticketboss.services.signing import USER_AGENT, headers, signature

BODY = b'{"type":"reservation.confirmed","data":{"reservation_id":"r-1","seats":2}}'
MSG_ID = "msg_2mP7X0f5b8Q1"


def box(*keys: bytes) -> SecretBox:
    made = SecretBox.from_settings(Settings(webhook_secret_keys=",".join(k.decode() for k in keys)))
    assert made is not None
    return made


def test_a_new_secret_is_whsec_and_the_base64_of_32_random_bytes():
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert new_webhook_secret() != secret


def test_headers_signed_with_one_secret_verify_with_the_standardwebhooks_library():
    secret, now = new_webhook_secret(), int(time.time())
    signed = headers([secret], MSG_ID, now, BODY)
    assert Webhook(secret).verify(BODY, signed)["data"]["seats"] == 2
    assert signed["webhook-id"] == MSG_ID
    assert signed["webhook-timestamp"] == str(now)
    assert signed["content-type"] == "application/json"
    assert signed["user-agent"] == USER_AGENT


def test_during_a_rotation_both_signatures_are_sent_and_each_secret_alone_verifies():
    old, new, now = new_webhook_secret(), new_webhook_secret(), int(time.time())
    signed = headers([new, old], MSG_ID, now, BODY)
    assert len(signed["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, signed)
    Webhook(new).verify(BODY, signed)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(BODY, signed)


def test_a_tampered_body_does_not_verify():
    secret = new_webhook_secret()
    signed = headers([secret], MSG_ID, int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b'"seats":2', b'"seats":9'), signed)


def test_the_timestamp_given_is_the_one_signed():
    secret, now = new_webhook_secret(), int(time.time())
    signed = headers([secret], MSG_ID, now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**signed, "webhook-timestamp": str(now + 1)})
    assert signature([secret], MSG_ID, now, BODY) == signed["webhook-signature"]
    assert signature([secret], MSG_ID, now + 1, BODY) != signed["webhook-signature"]


@pytest.mark.parametrize("secrets", [[], "whsec_" + "A" * 44, ["not-a-whsec"], ["whsec_!!"]])
def test_signing_refuses_what_is_not_a_list_of_whsec_secrets(secrets):
    with pytest.raises(ValueError):
        signature(secrets, MSG_ID, 1, BODY)


def test_a_secret_encrypted_at_rest_decrypts_back():
    secrets, secret = box(Fernet.generate_key()), new_webhook_secret()
    token = secrets.encrypt(secret)
    assert secret not in token
    assert secrets.decrypt(token) == secret


def test_a_new_key_in_front_still_decrypts_tokens_of_the_old_one_and_rotate_moves_them():
    old_key, new_key, secret = Fernet.generate_key(), Fernet.generate_key(), new_webhook_secret()
    old_token = box(old_key).encrypt(secret)
    both = box(new_key, old_key)
    assert both.decrypt(old_token) == secret
    rotated = both.rotate(old_token)
    assert box(new_key).decrypt(rotated) == secret
    with pytest.raises(ValueError, match="no longer in WEBHOOK_SECRET_KEYS"):
        box(old_key).decrypt(rotated)
    with pytest.raises(ValueError):  # the first key is the one that encrypts
        box(old_key).decrypt(both.encrypt(secret))


def test_no_keys_means_no_box():
    assert SecretBox.from_settings(Settings(webhook_secret_keys="")) is None
    assert SecretBox.from_settings(Settings(webhook_secret_keys=" , ")) is None


def test_a_malformed_key_is_named_by_its_variable_never_printed():
    good, bad = Fernet.generate_key().decode(), "c2hvcnQta2V5LW5vdC0zMi1ieXRlcw=="
    with pytest.raises(ValueError, match="WEBHOOK_SECRET_KEYS") as raised:
        SecretBox.from_settings(Settings(webhook_secret_keys=f"{good},{bad}"))
    assert "key 2 of 2" in str(raised.value)
    assert bad not in str(raised.value) and good not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
