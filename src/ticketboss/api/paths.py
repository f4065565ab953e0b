"""Paths are routed as the client sent them, or refused as problem+json. Werkzeug would fold
a path's leading slashes silently, answer an inner doubled slash or a missing trailing one
with a text/html redirect to a URL built from the client's Host header, and decode an
encoded slash before routing, so that `/api/events/a%2Freservations` reached event `a`."""

from flask import Flask, request
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.routing import RequestRedirect


def register_paths(app: Flask) -> None:
    app.before_request(refuse_ambiguous_paths)


def refuse_ambiguous_paths() -> None:
    """400 for an encoded slash in the raw path (gunicorn's RAW_URI, before any decoding: no
    id contains a slash); 404, as for any unknown path, for an empty segment (`//`) or where
    Werkzeug would redirect."""
    environ = request.environ
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    if "%2f" in raw.partition("?")[0].lower():
        raise BadRequest("A path may not contain an encoded slash (%2F).")
    redirected = isinstance(request.routing_exception, RequestRedirect)
    if redirected or "//" in environ.get("PATH_INFO", ""):
        raise NotFound()
