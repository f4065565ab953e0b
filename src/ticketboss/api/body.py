"""Request bodies: read whole, within a size and a time limit, before anything acts on them;
JSON parsed without letting nesting or huge numbers escape as a 500."""

from __future__ import annotations

import io
import time

from flask import Flask, current_app, request
from flask_smorest import Blueprint as SmorestBlueprint
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import (
    BadRequest,
    RequestEntityTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

from ticketboss.api.auth import needs_key
from ticketboss.config import Settings

_CHUNK = 16 * 1024


def register_body_limits(app: Flask, settings: Settings) -> None:
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT_SECONDS"] = settings.body_timeout_seconds
    app.before_request(read_whole_body)


class IncompleteBody(BadRequest):
    """The body ended (or broke) before it was whole: nothing is acted on."""

    description = "The request body is malformed or ended before it was complete."


def read_whole_body() -> None:
    """Read the body now, whole, or refuse the request: 413 past MAX_BODY_BYTES (without
    reading the excess), 408 past BODY_TIMEOUT_SECONDS, 400 if it is cut short or its
    chunked framing is broken. The app then reads it from memory."""
    environ = request.environ
    length = request.content_length
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if (length is None and not chunked) or not needs_key():
        return  # no body; or a route that takes none (public, unrouted, OPTIONS): not read
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if length is not None and length > limit:
        raise RequestEntityTooLarge(f"The body may be at most {limit} bytes.")
    want = length if length is not None else limit + 1
    body = _read(environ, want, time.monotonic() + current_app.config["BODY_TIMEOUT_SECONDS"])
    if len(body) > limit:
        raise RequestEntityTooLarge(f"The body may be at most {limit} bytes.")
    if length is not None and len(body) < length:
        raise IncompleteBody()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))


def _read(environ: dict, want: int, deadline: float) -> bytes:
    """Up to `want` bytes of the body, or less if it ends; RequestTimeout past `deadline`."""
    # gunicorn lends the client's socket: bound each read by the time left. (Headers of the
    # next request are the worker's to time; see workers.py.)
    client = environ.get("gunicorn.socket")
    previous = client.gettimeout() if client is not None else None
    stream, chunks, size = environ["wsgi.input"], [], 0
    try:
        while size < want:
            if client is not None:
                client.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = stream.read(min(_CHUNK, want - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                raise RequestTimeout("The request body took too long to arrive.")
    except RequestTimeout:
        raise
    except TimeoutError as exc:
        raise RequestTimeout("The request body took too long to arrive.") from exc
    except Exception as exc:  # the server's body reader: a reset, broken chunks
        raise IncompleteBody() from exc
    finally:
        if client is not None:
            client.settimeout(previous)
    return b"".join(chunks)


class JsonParser(FlaskParser):
    """webargs' parser, refusing what json.loads cannot take as a 400 rather than a 500
    (nesting past the recursion limit, integers past Python's digit limit) and bodies that
    declare a charset other than UTF-8 (RFC 8259) as a 415."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return core.missing
        charset = req.mimetype_params.get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("JSON bodies are UTF-8 (RFC 8259).")
        try:
            return core.parse_json(req.get_data(cache=True))
        except (RecursionError, ValueError) as exc:  # JSONDecodeError is a ValueError
            return self._handle_invalid_json_error(exc, req)


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint with the project's parser: set once, for every route."""

    ARGUMENTS_PARSER = JsonParser()
