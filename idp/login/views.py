"""Sign-in page: email and password first, then the second factor when the account has one."""

from __future__ import annotations

import logging

from flask import make_response, redirect, render_template, request, url_for

from idp.domain.acr import ACR_MULTI_FACTOR, ACR_TWO_STEP
from idp.domain.errors import DomainError, ServiceUnavailable, Throttled
from idp.login import bp
from idp.login.factors import usable
from idp.login.finish import finish_sign_in
from idp.login.flow import start_flow
from idp.services import services
from idp.web.cookies import read_device_cookie
from idp.web.current import client_ip, current_session
from idp.web.redirects import safe_next

log = logging.getLogger("idp.login")


def _required_acr(value: str | None) -> str | None:
    return value if value in (ACR_MULTI_FACTOR, ACR_TWO_STEP) else None


@bp.get("/login")
def sign_in():
    next_url = safe_next(request.args.get("next"))
    username = (request.args.get("login_hint") or "")[:320]
    acr = _required_acr(request.args.get("acr"))
    if request.args.get("step_up") and acr:
        # Already signed in with too weak a method: ask only for the missing second factor.
        session, user = current_session()
        if session is not None:
            return _step_up(user, list(session.amr or ["pwd"]), next_url, acr)
    notice = None
    if request.args.get("expired"):
        notice = "Your sign-in took too long or was already finished. Please sign in again."
    elif request.args.get("reauth"):
        notice = "For your security, confirm it's you before making this change."
    return _page(next_url, username, None, 200, acr=acr, notice=notice)


@bp.post("/login")
def sign_in_submit():
    next_url = safe_next(request.form.get("next"))
    username = (request.form.get("username") or "").strip()[:320]
    password = request.form.get("password") or ""
    acr = _required_acr(request.form.get("acr"))
    svc = services()
    try:
        user = svc.accounts.authenticate_password(username, password, client_ip())
    except Throttled as throttled:
        # RFC 6585 §4: tell clients (and password managers) how long to wait.
        response = make_response(_page(next_url, username, throttled.public, 429, acr))
        response.headers["Retry-After"] = str(throttled.retry_after)
        return response
    except ServiceUnavailable as unavailable:
        return _page(next_url, username, unavailable.public, 503, acr)
    except DomainError as failure:
        known = svc.accounts.find_by_email(username) if username else None
        svc.audit.record("sign_in_failed", user_id=known.id if known else None, ip=client_ip(),
                         user_agent=request.headers.get("User-Agent"), step="password")
        return _page(next_url, username, failure.public, 200, acr)
    return _continue_after_first_factor(user, ["pwd"], next_url, acr)


def _step_up(user, amr: list[str], next_url: str, acr: str):
    need_possession = acr == ACR_MULTI_FACTOR
    methods = usable(services().factors.methods(user), require_possession=need_possession)
    if not methods:
        # Nothing proven here, so nothing is finished: the person is led to enrol a factor first.
        return render_template("login/needs_factor.html", next_url=next_url), 403
    start_flow(user.id, amr, next_url, require_possession=need_possession, method=methods[0])
    return redirect(url_for("login.second_factor"), code=303)


def _continue_after_first_factor(user, amr: list[str], next_url: str, acr: str | None):
    svc = services()
    need_possession = acr == ACR_MULTI_FACTOR
    methods = usable(svc.factors.methods(user), require_possession=need_possession)
    if not methods:
        # Nothing more to ask. If the app required more, the protocol side answers it with
        # unmet_authentication_requirements; the person can enrol a factor at /account/security.
        response, _ = finish_sign_in(user.id, amr, next_url)
        return response
    if acr is None and svc.devices.recognise(user.id, read_device_cookie()):
        # A trusted browser skips the second factor but claims nothing for it: amr stays ["pwd"].
        response, _ = finish_sign_in(user.id, amr, next_url)
        return response
    start_flow(user.id, amr, next_url, require_possession=need_possession, method=methods[0])
    return redirect(url_for("login.second_factor"), code=303)


def _page(next_url: str, username: str, error: str | None, status: int, acr: str | None = None, notice=None):
    return render_template("login/sign_in.html", next_url=next_url, username=username, error=error, acr=acr,
                           notice=notice), status


@bp.route("/unlock/<token>", methods=["GET", "POST"])
def unlock(token: str):
    """The owner's emailed link; a GET only shows the button, so mail scanners cannot use it up."""
    if request.method == "GET":
        return render_template("login/unlock.html", done=None)
    user = services().lockouts.unlock_with_link(token)
    return render_template("login/unlock.html", done=user is not None), (200 if user else 400)
