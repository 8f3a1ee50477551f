"""Django glue for :mod:`wsbridge.identity`: live revocation, connect tokens, re-checks.

Installed by :func:`wsbridge_django.wsgi.wrap_application` and the app config:

* Signals close connections in every process (through the channel layer):
  ``user_logged_out`` and a deleted ``Session`` row end that login
  session's connections; a password change or ``is_active=False`` ends all
  of that user's (close code 4403, the reason visible to the client).
* A periodic re-check (``WSBRIDGE["IDENTITY"]["RECHECK_INTERVAL"]``, 60 s)
  re-reads each connection's session or token user, so a session that just
  expires, or was ended by a cache engine that sends no signal, ends too.
* Connect tokens are signed with :mod:`django.core.signing` (``SECRET_KEY``,
  with ``SECRET_KEY_FALLBACKS`` for rotation, salted): no new dependency, the
  key the site already guards, and Django's own constant-time checks. PyJWT
  would add a dependency and interoperability this token does not need
  (only this site reads it). :func:`connect_token_view` issues them.

Settings (all optional)::

    WSBRIDGE = {"IDENTITY": {
        "RECHECK_INTERVAL": 60.0,   # seconds between two checks of one connection
        "TOKEN_TTL": 300.0,         # seconds a connect token lives
        "TOKEN_AUDIENCE": None,     # names this site (default: from SECRET_KEY)
        "SIGNALS": True,            # connect the revocation signals
    }}
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from wsbridge.identity import ConnectTokens, IdentityOptions, TokenError, user_id

__all__ = [
    "DjangoSigningCodec",
    "identity_options",
    "connect_tokens",
    "issue_token",
    "connect_token_view",
    "connect_signals",
]

logger = logging.getLogger("wsbridge.django")

_SALT = "wsbridge_django.connect-token"


def _conf(name: str, default: Any) -> Any:
    from .conf import wsbridge_settings

    return (wsbridge_settings.IDENTITY or {}).get(name, default)


class DjangoSigningCodec:
    """Connect tokens through ``django.core.signing`` (``SECRET_KEY``, salted, timestamped).

    The separator is ``.`` rather than Django's default ``:``, so a token is
    made of RFC 7230 token characters only and can ride in
    ``Sec-WebSocket-Protocol`` (browsers refuse a ``:`` there).
    """

    def _signer(self) -> Any:
        from django.core import signing

        return signing.TimestampSigner(sep=".", salt=_SALT)

    def encode(self, claims: dict[str, Any]) -> str:
        return str(self._signer().sign_object(claims))

    def decode(self, token: str) -> dict[str, Any]:
        from django.core import signing

        try:
            claims = self._signer().unsign_object(token)
        except signing.BadSignature as exc:
            raise TokenError("forged") from exc
        except ValueError as exc:
            raise TokenError("malformed") from exc
        if not isinstance(claims, dict):
            raise TokenError("malformed")
        return claims


def _hash_digest(user: Any) -> str:
    # A digest of the session auth hash: a password change invalidates the token,
    # and the token carries nothing a session cookie could be forged from.
    auth_hash = user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
    return hashlib.sha256(auth_hash.encode()).hexdigest()[:24]


def _audience() -> str:
    from django.utils.crypto import salted_hmac

    found: str | None = _conf("TOKEN_AUDIENCE", None)
    return found or "dj-" + salted_hmac(_SALT, "audience").hexdigest()[:16]


def _load_user(ident: str, claims: dict[str, Any]) -> Any:
    """The token's user, or None when gone, inactive or its password changed."""
    from django.contrib.auth import get_user_model

    model = get_user_model()
    try:
        user = model._default_manager.get(pk=ident)
    except (model.DoesNotExist, ValueError):
        return None
    if not getattr(user, "is_active", True):
        return None
    if claims.get("hsh") != _hash_digest(user):
        return None
    return user


def load_token_user(ident: str, claims: dict[str, Any]) -> Any:
    """The user loader of :func:`connect_tokens`, inside Django's DB handling."""
    from . import db

    with db.consumer_call(None):
        return _load_user(ident, claims)


def connect_tokens() -> ConnectTokens:
    """The site's :class:`~wsbridge.identity.ConnectTokens` (one per process)."""
    tokens = _tokens[0]
    if tokens is None:
        tokens = _tokens[0] = ConnectTokens(
            DjangoSigningCodec(),
            audience=_audience(),
            ttl=float(_conf("TOKEN_TTL", 300.0)),
            user_loader=load_token_user,
        )
    return tokens


_tokens: list[ConnectTokens | None] = [None]


def issue_token(request: Any) -> str:
    """A connect token for ``request.user`` bound to its session; raises ValueError if anonymous."""
    user = request.user
    if not getattr(user, "is_authenticated", False):
        raise ValueError("connect tokens are for logged-in users")
    session = getattr(request, "session", None)
    ref = session.session_key if session is not None else None
    return connect_tokens().issue(user, session_ref=ref, extra={"hsh": _hash_digest(user)})


def connect_token_view(request: Any) -> Any:
    """``{"token", "expires_in"}`` for the logged-in user (403 otherwise); never cached.

    Route it in the site's urls.py: ``path("wsbridge/token/", connect_token_view)``.
    """
    from django.http import JsonResponse

    if not getattr(request.user, "is_authenticated", False):
        return JsonResponse({"error": "login required"}, status=403)
    response = JsonResponse({"token": issue_token(request), "expires_in": connect_tokens().ttl})
    response["Cache-Control"] = "no-store"
    return response


# -- re-checks -----------------------------------------------------------------------------


def _session_ref(scope: dict[str, Any]) -> str | None:
    from .sessions import session_cookie

    if "wsbridge.token_claims" in scope:
        return None  # the token names its session itself
    return session_cookie(scope)


def validate(scope: dict[str, Any]) -> str | None:
    """Is the connection's user still logged in? None if so, else why not."""
    from . import db

    with db.consumer_call(scope):
        claims = scope.get("wsbridge.token_claims")
        if claims is not None:
            valid = _load_user(claims["sub"], claims) is not None
            return None if valid else "the token's user is no longer valid"
        return _validate_session(scope)


def _validate_session(scope: dict[str, Any]) -> str | None:
    from django.contrib.auth import get_user

    from .auth import ScopeRequest
    from .sessions import session_cookie, session_store_class

    key = session_cookie(scope)
    if key is None:
        return "no session"
    fresh = {"session": session_store_class()(key), "user": None}
    if not list(fresh["session"].keys()):
        return "session ended"
    user = get_user(ScopeRequest(fresh))
    if not getattr(user, "is_authenticated", False):
        return "logged out"
    if user_id(user) != scope.get("wsbridge.user_id"):
        return "logged out"
    return None


def identity_options() -> IdentityOptions:
    """What :func:`~wsbridge_django.wsgi.wrap_application` passes as ``wrap(identity=...)``."""
    return IdentityOptions(
        tokens=connect_tokens(),
        validator=validate,
        recheck_interval=float(_conf("RECHECK_INTERVAL", 60.0)),
        session_ref=_session_ref,
    )


# -- signals --------------------------------------------------------------------------------


def _safely(what: str, func: Any, *args: Any, **kwargs: Any) -> None:
    # A logout must work while Redis is down: log, never raise into the site's view.
    try:
        func(*args, **kwargs)
    except Exception as exc:
        logger.warning("could not %s: %s (connections close at their next re-check)", what, exc)


def _on_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    from wsbridge.identity import revoke_session

    session = getattr(request, "session", None)
    key = session.session_key if session is not None else None
    if key:
        _safely("close the logged-out session's connections", revoke_session, key, "logged out")


def _on_session_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    from wsbridge.identity import revoke_session

    _safely(
        "close a deleted session's connections",
        revoke_session,
        instance.session_key,
        "session ended",
    )


def _remember(sender: Any, instance: Any, **kwargs: Any) -> None:
    instance._wsbridge_seen = (
        instance.__dict__.get("password"),
        instance.__dict__.get("is_active"),
    )


def _on_user_saved(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    from wsbridge.identity import revoke_user

    before = getattr(instance, "_wsbridge_seen", None)
    _remember(sender, instance)
    if created or before is None or instance.pk is None:
        return
    password, active = before
    if active and not getattr(instance, "is_active", True):
        _safely(
            "close a deactivated user's connections",
            revoke_user,
            instance.pk,
            "account deactivated",
        )
    elif password is not None and password != instance.__dict__.get("password"):
        _safely(
            "close the connections of a user whose password changed",
            revoke_user,
            instance.pk,
            "password changed",
        )


def connect_signals() -> None:
    """Connect the revocation signals (the app config calls it; idempotent)."""
    from django.apps import apps
    from django.contrib.auth import get_user_model, user_logged_out
    from django.db.models.signals import post_delete, post_init, post_save

    if not _conf("SIGNALS", True):
        return
    user_logged_out.connect(_on_logged_out, dispatch_uid="wsbridge.identity.logout")
    model = get_user_model()
    post_init.connect(_remember, sender=model, dispatch_uid="wsbridge.identity.init")
    post_save.connect(_on_user_saved, sender=model, dispatch_uid="wsbridge.identity.save")
    if apps.is_installed("django.contrib.sessions"):
        from django.contrib.sessions.models import Session

        post_delete.connect(
            _on_session_deleted, sender=Session, dispatch_uid="wsbridge.identity.session"
        )
