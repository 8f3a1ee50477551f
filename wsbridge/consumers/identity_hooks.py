"""The connection side of :mod:`wsbridge.identity`: groups, control messages, re-checks.

Called by the connection runner (:mod:`wsbridge.consumers.runner`), never by
applications: :func:`on_open` when a connection is accepted (join the user's
and session's groups, count it for the per-user limit), :func:`on_finish` at
the end, :func:`handle_control` for the ``wsbridge.*`` control messages
(close, deliver, re-check, token refresh). One sweeper greenlet per process
(alive only while connections are tracked) closes expired-token connections
and queues the periodic re-checks.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from typing import Any

from ..identity import (
    CONTROL_CLOSE,
    CONTROL_DELIVER,
    REVOKED,
    TOKEN_EXPIRED,
    TokenError,
    _safe,
    options_for,
    session_group,
    user_group,
    user_id,
)

__all__ = ["on_open", "on_finish", "handle_control", "parse_refresh", "status", "counters"]

logger = logging.getLogger("wsbridge.identity")

#: Connections of this process that joined a user group (for re-checks and status).
_tracked: weakref.WeakSet[Any] = weakref.WeakSet()
counters: dict[str, int] = {"revoked": 0, "kicked": 0, "token_expired": 0, "recheck_failed": 0}


# -- the connection side (called by the runner and the transports) -----------------------


def _scope_user_id(scope: dict[str, Any]) -> str | None:
    return user_id(scope.get("user"))


def on_open(conn: Any) -> bool:
    """A connection is being accepted: join its user's (and session's) group, start re-checks.

    Returns False (join nothing) when the user is at ``max_connections_per_user``;
    True, with a WARNING, when the layer could not add it to its user's group (the
    connection works without it; sends to the user miss it).
    """
    from ..exceptions import LayerError

    try:
        return _join_identity(conn)
    except (LayerError, ValueError) as exc:
        logger.warning(
            "%s %s could not join its user's group: %s",
            conn.scope.get("transport"),
            conn.scope.get("path"),
            exc,
        )
        return True


def _join_identity(conn: Any) -> bool:
    from .. import admission

    scope = conn.scope
    opts = options_for(scope)
    ident = (opts.user_key or _scope_user_id)(scope)
    if ident is None:
        return True
    if not admission.current().admit_user(_safe(ident)):
        return False
    conn.identity_counted = _safe(ident)
    scope["wsbridge.user_id"] = ident
    if conn.layer is None or conn.channel_name is None:
        return True
    groups = [user_group(ident)]
    ref = scope.get("wsbridge.session_group")
    if ref is None and opts.session_ref is not None:
        raw = opts.session_ref(scope)
        ref = session_group(raw) if raw else None
    if ref is not None:
        groups.append(ref)
    for group in groups:
        conn.layer.group_add(group, conn.channel_name)
    conn.identity_groups = groups
    conn.identity_next_check = time.monotonic() + opts.recheck_interval
    _tracked.add(conn)
    _ensure_sweeper()
    return True


def on_finish(conn: Any) -> None:
    """The connection ended: leave the identity groups (errors are the layer's to log)."""
    _tracked.discard(conn)
    counted = getattr(conn, "identity_counted", None)
    if counted is not None:
        from .. import admission

        conn.identity_counted = None
        admission.current().release_user(counted)
    groups = getattr(conn, "identity_groups", None)
    if not groups or conn.layer is None:
        return
    conn.identity_groups = None
    for group in groups:
        try:
            conn.layer.group_discard(group, conn.channel_name)
        except Exception:
            logger.debug("could not leave %s on close", group, exc_info=True)


def handle_control(conn: Any, event: dict[str, Any]) -> None:
    """Run a ``wsbridge.*`` control message for ``conn`` (never seen by the consumer)."""
    kind = event.get("type")
    if kind == CONTROL_DELIVER:
        conn.deliver(event.get("text"), event.get("bytes"))
    elif kind == CONTROL_CLOSE:
        code = int(event.get("code") or REVOKED)
        reason = str(event.get("reason") or "")
        if code != TOKEN_EXPIRED:  # expiries are counted by the sweeper
            counters["revoked" if event.get("revoked") else "kicked"] += 1
        logger.info(
            "closing %s %s of user %s with %d: %s",
            conn.scope.get("transport"),
            conn.scope.get("path"),
            conn.scope.get("wsbridge.user_id"),
            code,
            reason,
        )
        conn.close_now(code, reason)
    elif kind == "wsbridge.recheck":
        _recheck(conn)
    elif kind == "wsbridge.refresh":
        _refresh(conn, event.get("token"))


def _recheck(conn: Any) -> None:
    opts = options_for(conn.scope)
    if opts.validator is None:
        return
    try:
        reason = opts.validator(conn.scope)
    except Exception:
        counters["recheck_failed"] += 1
        logger.exception(
            "identity re-check of %s failed; the connection stays", conn.scope.get("path")
        )
        return
    if reason:
        counters["revoked"] += 1
        logger.info(
            "re-check closed %s of user %s with %d: %s",
            conn.scope.get("path"),
            conn.scope.get("wsbridge.user_id"),
            REVOKED,
            reason,
        )
        conn.close_now(REVOKED, reason)


#: Text frames a token connection sends to refresh its token without reconnecting.
REFRESH_PREFIX = '{"wsbridge.refresh":'


def as_refresh(event: dict[str, Any]) -> bool:
    """Turn a ``websocket.receive`` of a refresh frame into ``wsbridge.refresh``; True if it was."""
    token = parse_refresh(event["text"])
    if token is None:
        return False
    event.clear()
    event.update(type="wsbridge.refresh", token=token)
    return True


def parse_refresh(text: str) -> str | None:
    """The token of a refresh frame ``{"wsbridge.refresh": "<token>"}``, else None."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    token = obj.get("wsbridge.refresh") if isinstance(obj, dict) and len(obj) == 1 else None
    return token if isinstance(token, str) else None


def _refresh(conn: Any, token: Any) -> None:
    scope = conn.scope
    tokens = options_for(scope).tokens
    old = scope.get("wsbridge.token_claims")
    if tokens is None or old is None or not isinstance(token, str):
        return
    try:
        claims = tokens.verify(token)
        if claims["sub"] != old["sub"]:
            raise TokenError("forged", "a refresh must name the same user")
        tokens.load_user(claims)
    except TokenError as exc:
        logger.info(
            "refused a token refresh on %s: %s; closing with %d",
            scope.get("path"),
            exc.kind,
            REVOKED,
        )
        conn.close_now(REVOKED, f"token refused: {exc.kind}")
        return
    scope["wsbridge.token_claims"] = claims
    conn.deliver(json.dumps({"wsbridge.refreshed": claims["exp"]}), None)


# -- the re-check sweeper (one greenlet per process, only while connections are tracked) ----

_sweeper: list[Any] = [None]


def _ensure_sweeper() -> None:
    if _sweeper[0] is None:
        import gevent

        _sweeper[0] = gevent.spawn(_sweep)


def _sweep() -> None:
    import gevent

    try:
        while _tracked:
            gevent.sleep(0.25)
            now_wall, now = time.time(), time.monotonic()
            for conn in list(_tracked):
                _sweep_one(conn, now_wall, now)
    finally:
        _sweeper[0] = None


def _sweep_one(conn: Any, now_wall: float, now: float) -> None:
    if conn.finished.is_set():
        _tracked.discard(conn)
        return
    claims = conn.scope.get("wsbridge.token_claims")
    if claims is not None and claims["exp"] <= now_wall:
        _tracked.discard(conn)
        counters["token_expired"] += 1
        conn.post(
            {
                "type": CONTROL_CLOSE,
                "code": int(TOKEN_EXPIRED),
                "reason": "connect token expired: refresh and reconnect",
                "revoked": False,
            }
        )
        return
    if now >= getattr(conn, "identity_next_check", now + 1):
        opts = options_for(conn.scope)
        conn.identity_next_check = now + opts.recheck_interval
        if opts.validator is not None:
            conn.post({"type": "wsbridge.recheck"})


def status() -> dict[str, Any]:
    """Counters for ``wsbridge status``: tracked connections, closes by reason."""
    return {"tracked_connections": len(_tracked), **counters}
