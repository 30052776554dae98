"""The signed-in session of the current request, looked up once per request."""

from __future__ import annotations

from flask import g, request

from idp.services import services
from idp.web.cookies import read_session_cookie


def client_ip() -> str | None:
    return request.remote_addr


def user_agent() -> str | None:
    return request.headers.get("User-Agent")


def current_session():
    """The active browser session and its user, or (None, None)."""
    if "idp_current" not in g:
        svc = services()
        session = svc.sessions.from_cookie(read_session_cookie())
        user = svc.accounts.get(session.user_id) if session else None
        if session is not None and not svc.accounts.can_sign_in(user):
            session, user = None, None
        if session is not None:
            svc.sessions.touch(session)
        g.idp_current = (session, user)
    return g.idp_current


def forget_current_session() -> None:
    g.pop("idp_current", None)
