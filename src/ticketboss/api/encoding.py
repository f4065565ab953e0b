"""Responses encoded by orjson: several times faster than the json module on every answer,
with the keys sorted and the separators compact, as Flask's own provider writes them.
Request bodies are still parsed by api/body.JsonParser (its limits and 400s)."""

from __future__ import annotations

from typing import Any, cast

import orjson
from flask import Flask
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # asked for a layout (the OpenAPI document's indent): the json module's
            return super().dumps(obj, **kwargs)
        return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()

    def response(self, *args: Any, **kwargs: Any):
        body = orjson.dumps(
            self._prepare_response_obj(args, kwargs), default=self.default, option=_OPTIONS
        )
        app = cast(Flask, self._app)  # a full Flask app, not sansio's base
        return app.response_class(body, mimetype=self.mimetype)
