"""Prometheus scrape endpoint (outside the OpenAPI document, like every exporter's)."""

from flask import Blueprint, Response

from ticketboss import metrics

blp = Blueprint("metrics", __name__)


@blp.get("/metrics")
def scrape():
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
