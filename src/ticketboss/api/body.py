"""Request bodies: read whole, within a size and a time limit, before anything acts on them;
JSON parsed without letting nesting or huge numbers escape as a 500."""

from __future__ import annotations

import contextlib
import io
import json
import time

import gevent
from flask import Flask, current_app, request
from flask_smorest import Blueprint as SmorestBlueprint
from gevent import monkey
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request
from werkzeug.exceptions import (
    BadRequest,
    RequestEntityTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

from ticketboss.api import deadlines
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
    reading the excess), 408 if the whole body has not arrived within BODY_TIMEOUT_SECONDS
    of its headers (however it trickles), 400 if it is cut short or its chunked framing is
    broken. The app then reads it from memory, and the request's deadline starts again."""
    environ = request.environ
    length = request.content_length
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if (length is None and not chunked) or not needs_key():
        return  # no body; or a route that takes none (public, unrouted, OPTIONS): not read
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if length is not None and length > limit:
        raise RequestEntityTooLarge(f"The body may be at most {limit} bytes.")
    want = length if length is not None else limit + 1
    body = _read(environ, want, current_app.config["BODY_TIMEOUT_SECONDS"])
    if len(body) > limit:
        raise RequestEntityTooLarge(f"The body may be at most {limit} bytes.")
    if length is not None and len(body) < length:
        raise IncompleteBody()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    deadlines.restart()


def _read(environ: dict, want: int, seconds: float) -> bytes:
    """Up to `want` bytes of the body, or less if it ends; RequestTimeout past `seconds`."""
    deadline = time.monotonic() + seconds
    # gunicorn lends the client's socket: bound each read by the time left. (Headers of the
    # next request are the worker's to time; see workers.py.) A read returns only once it
    # has all it asked for, so a body trickling a byte at a time would pass every per-read
    # bound: under gevent, a timeout also bounds the whole.
    client = environ.get("gunicorn.socket")
    previous = client.gettimeout() if client is not None else None
    stream, chunks, size = environ["wsgi.input"], [], 0
    try:
        with _whole_within(seconds):
            while size < want:
                if client is not None:
                    client.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = stream.read(min(_CHUNK, want - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise _too_slow()
    except RequestTimeout:
        raise
    except TimeoutError as exc:
        raise _too_slow() from exc
    except Exception as exc:  # the server's body reader: a reset, broken chunks
        raise IncompleteBody() from exc
    finally:
        if client is not None:
            client.settimeout(previous)
    return b"".join(chunks)


def _too_slow() -> RequestTimeout:
    return RequestTimeout("The request body took too long to arrive.")


def _whole_within(seconds: float):
    """A gevent timeout that raises RequestTimeout in this greenlet (gunicorn's gevent
    worker); nothing in threads, where each read's bound is all there is."""
    if not monkey.is_module_patched("socket"):
        return contextlib.nullcontext()
    return gevent.Timeout(seconds, _too_slow())


class DuplicateKey(Exception):
    """A JSON object names a key twice (json.loads would keep the last one silently)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return found


# Built once: json.loads with a hook would build a decoder for every body.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


class JsonParser(FlaskParser):
    """webargs' parser, refusing what json.loads cannot take as a 400 rather than a 500
    (nesting past the recursion limit, integers past Python's digit limit), bodies that
    declare a charset other than UTF-8 (RFC 8259) as a 415, and an object with a duplicated
    key as a 400: a proxy or firewall that reads the first one would see another request."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return core.missing
        charset = req.mimetype_params.get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("JSON bodies are UTF-8 (RFC 8259).")
        try:
            return _DECODER.decode(req.get_data(cache=True).decode())
        except DuplicateKey as exc:
            message = f"Duplicate key {exc.args[0][:64]!r}: a key may appear once in an object."
            abort(400, exc=exc, messages={"json": [message]})
        except (RecursionError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
            return self._handle_invalid_json_error(exc, req)


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint with the project's parser: set once, for every route."""

    ARGUMENTS_PARSER = JsonParser()
