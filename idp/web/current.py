"""The signed-in session of the current request, looked up once per request."""

from __future__ import annotations

from flask import request

from idp.services import services
from idp.web.cookies import read_session_cookie


# Kept on the request itself: `g` outlives a request when an app context is already open.
_KEY = "idp.current_session"


def client_ip() -> str | None:
    return request.remote_addr


def user_agent() -> str | None:
    return request.headers.get("User-Agent")


def current_session():
    """The active browser session and its user, or (None, None)."""
    if _KEY not in request.environ:
        svc = services()
        session = svc.sessions.from_cookie(read_session_cookie())
        user = svc.accounts.get(session.user_id) if session else None
        if session is not None and not svc.accounts.can_sign_in(user):
            session, user = None, None
        if session is not None:
            svc.sessions.touch(session)
        request.environ[_KEY] = (session, user)
    return request.environ[_KEY]


def forget_current_session() -> None:
    request.environ.pop(_KEY, None)
