"""The second-factor step: choose a method, prove it, optionally trust this browser, finish."""

from __future__ import annotations

import logging
from dataclasses import asdict

from flask import redirect, render_template, request, url_for

from idp.domain.errors import ServiceUnavailable, Throttled
from idp.login import bp
from idp.login.factors import FACTORS, amr_after, usable
from idp.login.finish import finish_sign_in
from idp.login.flow import SECOND_FACTOR, LoginFlow, current_flow, discard_flow, save_flow
from idp.services import services
from idp.services.limits import minutes
from idp.web.current import client_ip, user_agent

log = logging.getLogger("idp.login")

WRONG_CODE = "That code is not right. Check it and try again."
FLOW_EXPIRED = "Your sign-in took too long or was already finished. Please sign in again."


def _choose(flow: LoginFlow, methods: list[str], wanted: str | None) -> str:
    if wanted in methods:
        return wanted
    if flow.method in methods:
        return flow.method
    return methods[0]


def _flow_user_and_methods():
    """This browser's flow at this step, its user and the methods they may use (read together);
    (None, None, []) when the flow is gone or the account can no longer sign in."""
    flow = current_flow(SECOND_FACTOR)
    user, methods = services().factors.user_and_methods(flow.user_id) if flow else (None, [])
    if flow is None or not services().accounts.can_sign_in(user):
        discard_flow(flow)
        return None, None, []
    return flow, user, usable(methods, flow.require_possession)


@bp.get("/login/2fa")
def second_factor():
    flow, user, methods = _flow_user_and_methods()
    if flow is None:
        return redirect(url_for("login.sign_in", expired=1))
    if not methods:
        discard_flow(flow)
        return redirect(url_for("login.sign_in", expired=1))
    method = _choose(flow, methods, request.args.get("method"))
    as_stored = asdict(flow)
    flow.method = method
    notice = None
    try:
        FACTORS[method].prepare(flow, user, client_ip())
    except Throttled as throttled:
        notice = throttled.public
    except ServiceUnavailable as unavailable:
        return _page(flow, user, methods, method, error=unavailable.public, status=503)
    if asdict(flow) != as_stored:  # another method chosen, a code sent: what is unchanged is not written again
        save_flow(flow)
    return _page(flow, user, methods, method, notice=notice)


@bp.post("/login/2fa/resend")
def resend_code():
    flow, user, methods = _flow_user_and_methods()
    if flow is None:
        return redirect(url_for("login.sign_in", expired=1))
    method = request.form.get("method")
    if method not in methods or method not in ("email", "sms"):
        return redirect(url_for("login.second_factor"))
    try:
        services().factors.send_code(user, flow.id, method)
    except Throttled as throttled:
        return _page(flow, user, methods, method, error=throttled.public, status=429)
    except ServiceUnavailable as unavailable:
        return _page(flow, user, methods, method, error=unavailable.public, status=503)
    return _page(flow, user, methods, method, notice="We sent a new code. The previous one no longer works.")


@bp.post("/login/2fa")
def second_factor_submit():
    flow, user, methods = _flow_user_and_methods()
    if flow is None:
        return redirect(url_for("login.sign_in", expired=1))
    svc = services()
    method = request.form.get("method")
    if method not in methods:
        return redirect(url_for("login.second_factor"))
    ip = client_ip()
    try:
        svc.code_limits.check_ip(ip)
        proven = FACTORS[method].verify(flow, user, request.form)
        if proven is None:
            return _wrong_code(flow, user, methods, method, ip)
        svc.code_limits.record_success(user.id, ip)
    except Throttled as throttled:
        return _page(flow, user, methods, method, error=throttled.public, status=429,
                     retry_after=throttled.retry_after)
    except ServiceUnavailable as unavailable:
        # Fail closed: without the shared counters no code is checked.
        return _page(flow, user, methods, method, error=unavailable.public, status=503)
    discard_flow(flow)
    device_token = None
    if request.form.get("trust_device"):
        _, device_token = svc.devices.trust(user.id, request.form.get("device_name"), user_agent(), ip)
    response, _ = finish_sign_in(user.id, amr_after(flow, FACTORS[method], proven), flow.next_url,
                                 device_token=device_token)
    return response


def _wrong_code(flow: LoginFlow, user, methods, method, ip):
    svc = services()
    outcome = svc.code_limits.record_failure(user.id, ip)
    svc.audit.record("sign_in_failed", user_id=user.id, ip=ip, user_agent=user_agent(), step="second_factor",
                     method=method)
    if outcome.account_locked:
        discard_flow(flow)
        svc.lockouts.lock(user, ip, user_agent())
        return render_template("login/locked.html"), 403
    if outcome.ip_blocked:
        wait = svc.settings.code_ip_block_seconds
        return _page(flow, user, methods, method, status=429, retry_after=wait,
                     error=f"Too many wrong codes from your network. Try again in {minutes(wait)}.")
    return _page(flow, user, methods, method, error=WRONG_CODE, status=200)


def _page(flow, user, methods, method, error=None, notice=None, status=200, retry_after=None):
    choices = [(m, FACTORS[m].label) for m in methods]
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return render_template(
        "login/second_factor.html",
        method=method,
        label=FACTORS[method].label,
        choices=choices,
        error=error,
        notice=notice,
        user=user,
        step_up=flow.require_possession,
    ), status, headers
