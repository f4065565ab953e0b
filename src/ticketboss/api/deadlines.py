"""Each request's deadline (ticketboss.deadline): REQUEST_DEADLINE_SECONDS from when its headers
arrived, given once more when its body is whole (the body has its own bound, a 408), and
cleared when the request ends."""

from flask import Flask, current_app, g

from ticketboss import deadline
from ticketboss.config import Settings


def register_deadline(app: Flask, settings: Settings) -> None:
    app.config["REQUEST_DEADLINE_SECONDS"] = settings.request_deadline_seconds
    app.before_request(_start)
    app.teardown_request(_end)


def _start() -> None:
    g.deadline = deadline.start(current_app.config["REQUEST_DEADLINE_SECONDS"])


def restart() -> None:
    """The body is whole: the request's own time starts again (the first token, kept in `g`,
    still clears it at the end)."""
    deadline.start(current_app.config["REQUEST_DEADLINE_SECONDS"])


def _end(_exc: BaseException | None) -> None:
    token = g.pop("deadline", None)
    if token is not None:
        deadline.end(token)
