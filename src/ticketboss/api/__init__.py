"""HTTP: flask-smorest blueprints, marshmallow schemas and the error mapping."""

from flask import Flask, current_app
from flask_smorest import Api

from ticketboss.api.errors import http_problem, register_errorhandlers
from ticketboss.services import ReservationService


class ProblemApi(Api):
    """flask-smorest, with every HTTP error rendered as problem+json."""

    def handle_http_exception(self, error):
        return http_problem(error)


def service() -> ReservationService:
    """The app's reservation service (one per worker process)."""
    return current_app.extensions["ticketboss"]


def register_blueprints(app: Flask) -> None:
    from ticketboss.api import events, health, metrics, reservations

    api = ProblemApi(app)
    api.register_blueprint(health.blp)
    api.register_blueprint(reservations.blp)
    api.register_blueprint(events.blp)
    app.register_blueprint(metrics.blp)


__all__ = ["register_blueprints", "register_errorhandlers", "service"]
