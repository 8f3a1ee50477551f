"""Prometheus metrics as a Django view: ``path("metrics/", metrics_view)``.

Who may read it: with ``WSBRIDGE["METRICS_TOKEN"]`` set, a request carrying
``Authorization: Bearer <token>`` (what a Prometheus scrape config sends as
``authorization: {credentials: ...}``); a logged-in staff user always. Anyone
else gets 403. The numbers are those of :mod:`wsbridge.metrics` (all gunicorn
workers' with ``PROMETHEUS_MULTIPROC_DIR`` set); needs the ``metrics`` extra.
"""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

__all__ = ["metrics_view", "allowed"]


def allowed(request: HttpRequest) -> bool:
    """Staff, or the bearer token of ``WSBRIDGE["METRICS_TOKEN"]`` when one is set."""
    user: Any = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token = (getattr(settings, "WSBRIDGE", None) or {}).get("METRICS_TOKEN")
    if not token:
        return False
    header = request.META.get("HTTP_AUTHORIZATION", "")
    return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The exposition text of this process (or of every worker in multi-process mode)."""
    if not allowed(request):
        return HttpResponseForbidden("metrics: staff or WSBRIDGE['METRICS_TOKEN'] only\n")
    from wsbridge.metrics import render

    body, content_type = render()
    return HttpResponse(body, content_type=content_type)
