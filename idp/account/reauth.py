"""Sensitive changes need a sign-in younger than settings.reauth_max_age (SPEC §6.9)."""

from __future__ import annotations

import functools

from flask import g, redirect, request, url_for

from idp.domain.acr import ACR_TWO_STEP
from idp.services import services
from idp.storage.models import utcnow
from idp.web.current import current_session


# amr values that show a second step was taken in the sign-in.
SECOND_STEP_AMR = {"mfa", "email"}


def signed_in(view):
    """The view runs with g.account_session and g.account_user set, or the person is sent to sign in."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        session, user = current_session()
        if session is None:
            return redirect(url_for("login.sign_in", next=_here()))
        g.account_session, g.account_user = session, user
        return view(*args, **kwargs)

    return wrapper


def recently_signed_in(view):
    """Like `signed_in`, and the sign-in must be fresh; otherwise the person signs in again first."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        session, user = current_session()
        if session is None:
            return redirect(url_for("login.sign_in", next=_here()))
        svc = services()
        age = (utcnow() - session.auth_time).total_seconds()
        # C19 (NIST SP 800-63B §6.1.2.1): with a second factor on the account, changes need a sign-in
        # that used it; a trusted-browser sign-in (password only) is not enough.
        weak = svc.factors.has_second_factor(user) and not SECOND_STEP_AMR & set(session.amr or ())
        if age > svc.settings.reauth_max_age or weak:
            return redirect(url_for("login.sign_in", next=_here(), reauth=1, login_hint=user.email,
                                    acr=ACR_TWO_STEP))
        g.account_session, g.account_user = session, user
        return view(*args, **kwargs)

    return wrapper


def _here() -> str:
    # After a POST the person comes back to the page, not to the form target.
    if request.method != "GET":
        return url_for("account.security")
    return request.full_path.rstrip("?")
