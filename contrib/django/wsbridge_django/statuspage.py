"""The live status page as a Django view, for staff: ``path("wsbridge/status/", status_view)``.

Turn the page's WebSocket on with ``WSBRIDGE["OPTIONS"] = {"status_path":
"/_wsbridge/status"}`` (``wrap()``'s option): it is served at
``/_wsbridge/status/ws`` and lets staff users (``scope["user"].is_staff``, from
the site's session cookie) in without a token. Anyone else gets 403 from the
view, and a refused handshake from the WebSocket (unless they hold
``OPTIONS["status_token"]``). See :mod:`wsbridge.statuspage`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

__all__ = ["status_view", "status_ws_path"]


def status_ws_path() -> str:
    """Where the page's WebSocket is: ``WSBRIDGE["OPTIONS"]["status_path"] + "/ws"``."""
    options = (getattr(settings, "WSBRIDGE", None) or {}).get("OPTIONS") or {}
    path = options.get("status_path")
    if not path:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            'the status page needs WSBRIDGE["OPTIONS"]["status_path"] (e.g. "/_wsbridge/status")'
        )
    return str(path).rstrip("/") + "/ws"


def status_view(request: HttpRequest) -> HttpResponse:
    """The page, for logged-in staff only (403 otherwise)."""
    user: Any = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_staff:
        return HttpResponseForbidden("the wsbridge status page is for staff users\n")
    from wsbridge.statuspage import page_html

    response = HttpResponse(page_html(status_ws_path()), content_type="text/html; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response
