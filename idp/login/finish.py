"""The last step of every sign-in: turn the proof into a session and hand back an AuthResult."""

from __future__ import annotations

from flask import redirect, session as ui_state

from idp.domain.acr import acr_for_amr
from idp.domain.auth_result import AuthResult
from idp.extensions import db
from idp.oidc.views import answer_after_sign_in
from idp.services import services
from idp.storage.models import utcnow
from idp.web.cookies import (
    read_known_browser_cookie,
    set_device_cookie,
    set_known_browser_cookie,
    set_session_cookie,
)
from idp.web.current import client_ip, current_session, forget_current_session, user_agent
from idp.web.redirects import safe_next


def finish_sign_in(user_id: str, amr: list[str], next_url: str | None, device_token: str | None = None):
    svc = services()
    previous, _ = current_session()
    now = utcnow()
    session, token = svc.sessions.start(
        user_id,
        amr,
        acr_for_amr(amr),
        now,
        client_ip(),
        user_agent(),
        previous=previous,
    )
    result = AuthResult(
        user_id=user_id,
        amr=tuple(amr),
        acr=session.acr,
        auth_time=int(now.timestamp()),
        session_id=session.id,
    )
    user = svc.accounts.get(user_id)
    svc.audit.record("sign_in", user_id=user_id, session_id=session.id, ip=client_ip(), user_agent=user_agent(),
                     amr=list(amr), acr=session.acr, commit=False)
    forget_current_session()
    # New CSRF secret too: nothing from before the sign-in stays valid (session fixation).
    ui_state.clear()
    next_url = safe_next(next_url)
    answer = answer_after_sign_in(next_url, session, user)
    # The new session, its audit row and the code issued for the app (if any) commit together.
    db.session.commit()
    known = svc.new_device.is_known(user_id, read_known_browser_cookie())
    if not known:
        svc.new_device.announce(user, session, client_ip(), user_agent())
    # 303: the browser must follow with GET and never re-post the credentials (RFC 9700 §4.12).
    response = answer or redirect(next_url, code=303)
    set_session_cookie(response, token, svc.settings.session_absolute_ttl)
    if device_token:
        set_device_cookie(response, device_token, svc.settings.trusted_device_ttl)
    if not known:
        set_known_browser_cookie(response, svc.new_device.browser_mark(user_id))
    return response, result
