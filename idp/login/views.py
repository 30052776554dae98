"""Sign-in page: email and password first."""

from __future__ import annotations

import logging

from flask import render_template, request

from idp.domain.errors import DomainError, ServiceUnavailable, Throttled
from idp.login import bp
from idp.login.finish import finish_sign_in
from idp.services import services
from idp.web.current import client_ip
from idp.web.redirects import safe_next

log = logging.getLogger("idp.login")


@bp.get("/login")
def sign_in():
    next_url = safe_next(request.args.get("next"))
    username = (request.args.get("login_hint") or "")[:320]
    return render_template("login/sign_in.html", next_url=next_url, username=username, error=None)


@bp.post("/login")
def sign_in_submit():
    next_url = safe_next(request.form.get("next"))
    username = (request.form.get("username") or "").strip()[:320]
    password = request.form.get("password") or ""
    svc = services()
    try:
        user = svc.accounts.authenticate_password(username, password, client_ip())
    except Throttled as throttled:
        return _page(next_url, username, throttled.public, 429)
    except ServiceUnavailable as unavailable:
        return _page(next_url, username, unavailable.public, 503)
    except DomainError as failure:
        log.info("password sign-in failed", extra={"ip": client_ip()})
        return _page(next_url, username, failure.public, 200)
    response, _ = finish_sign_in(user.id, ["pwd"], next_url)
    return response


def _page(next_url: str, username: str, error: str, status: int):
    return render_template("login/sign_in.html", next_url=next_url, username=username, error=error), status
