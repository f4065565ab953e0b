"""HTTP: flask-smorest blueprints, marshmallow schemas and the error mapping."""

import http

from apispec import BasePlugin
from flask import Flask, current_app, json, request
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from flask_swagger_ui import get_swaggerui_blueprint

from ticketboss.api.errors import PROBLEM_JSON, http_problem, register_errorhandlers
from ticketboss.api.schemas import Problem

REQUEST_ID = {
    "X-Request-ID": {
        "schema": {"type": "string"},
        "description": "The request's id: the client's own X-Request-ID, or a generated one.",
    }
}


class RequestIdHeader(BasePlugin):
    """Documents the X-Request-ID header that every response carries."""

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            for response in operation.get("responses", {}).values():
                if isinstance(response, dict):  # a "$ref" name gets it in its component
                    response.setdefault("headers", {}).update(REQUEST_ID)


_PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_KEY_ANSWERS = {
    "401": {
        "description": "No API key, or one that is malformed, unknown or revoked.",
        "content": _PROBLEM,
        "headers": {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer."},
            **REQUEST_ID,
        },
    },
    "429": {
        "description": "The partner's rate limit is spent (with PARTNER_RATE_LIMIT set), or "
        "this address sent too many bad keys in the last minute (AUTH_FAILURES_PER_MINUTE).",
        "content": _PROBLEM,
        "headers": {
            "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."},
            "RateLimit": {"schema": {"type": "string"}, "description": "IETF: r=…;t=…"},
            "RateLimit-Policy": {"schema": {"type": "string"}, "description": "IETF: q=…;w=…"},
            **REQUEST_ID,
        },
    },
}
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "A partner or operator key (tbk_…), from `ticketboss partner create`.",
}


class KeyAnswers(BasePlugin):
    """Documents the 401 and 429 that every route needing a key can answer."""

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            if operation.get("security") != []:
                for status, response in _KEY_ANSWERS.items():
                    operation.setdefault("responses", {}).setdefault(status, response)


SPEC_OPTIONS = {
    # Every operation needs a key unless it says `security: []` (the health routes).
    "security": [{"apiKey": []}],
    # Relative: the host that serves this document (every path starts with /api), whatever
    # its name, port or proxy in front; client generators take it as their default base URL.
    "servers": [{"url": "/", "description": "The host serving this document."}],
    # pyproject.toml declares no license: the code is not open source (all rights reserved).
    "info": {"license": {"name": "Proprietary", "identifier": "LicenseRef-Proprietary"}},
}


class ProblemApi(Api):
    """flask-smorest, with every HTTP error rendered and documented as problem+json."""

    ERROR_SCHEMA = Problem

    def _openapi_json(self):
        """The document, built at the first request and then served as built (flask-smorest
        would rebuild it for every request)."""
        if self._openapi_text is None:
            self._openapi_text = json.dumps(self.spec.to_dict(), indent=2, sort_keys=False)
        return current_app.response_class(self._openapi_text, mimetype="application/json")

    _openapi_text: str | None = None

    def handle_http_exception(self, error):
        return http_problem(error)

    def _register_pagination_header(self):
        """Nothing: pages here carry `nextCursor` in their body, never flask-smorest's
        X-Pagination header, whose schema would sit in the document unused."""

    def _register_responses(self):
        """flask-smorest's error responses (the `default` of every operation and those of
        argument errors), documented with the content type we send: problem+json."""
        for status in http.HTTPStatus:
            response = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = Problem
            response["headers"] = dict(REQUEST_ID)
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {
            "description": "Any other error, as problem+json.",
            "schema": Problem,
            "headers": dict(REQUEST_ID),
        }
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)


def register_blueprints(app: Flask) -> None:
    from ticketboss.api import (
        allocations,
        changes,
        events,
        health,
        metrics,
        reservations,
        webhooks,
    )

    app.config["API_SPEC_OPTIONS"] = SPEC_OPTIONS
    api = ProblemApi(app, spec_kwargs={"extra_plugins": [KeyAnswers(), RequestIdHeader()]})
    api.spec.components.security_scheme("apiKey", SECURITY_SCHEME)
    api.register_blueprint(health.blp)
    api.register_blueprint(reservations.blp)
    api.register_blueprint(events.blp)
    api.register_blueprint(allocations.blp)
    api.register_blueprint(webhooks.blp)
    api.register_blueprint(changes.blp)
    app.register_blueprint(metrics.blp)
    app.after_request(_empty_answers)
    # The docs page serves Swagger UI's assets from the installed package: it works offline.
    app.register_blueprint(
        get_swaggerui_blueprint("/api/docs", "/api/openapi.json", config={"app_name": "TicketBoss"})
    )


def _empty_answers(response):
    """An answer without content has no Content-Type (Flask would say text/html): 204, 304,
    and OPTIONS, which becomes a 204 with its Allow (and CORS) headers."""
    if request.method == "OPTIONS" and response.status_code == 200 and not response.data:
        response.status_code = 204
    if response.status_code in (204, 304):
        response.headers.pop("Content-Type", None)
    return response


__all__ = ["register_blueprints", "register_errorhandlers"]
