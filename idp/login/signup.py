"""/signup (SPEC §6.10, only when IDP_SIGNUP_ENABLED): email, password and an optional phone, then the
codes sent there; the account exists only once they verify.

The pending sign-up lives in the shared store under an opaque id held in this browser's signed UI
cookie, with a deadline; the password is hashed before it is stored. An address that already has an
account gets the same pages (its owner is emailed instead of sent a code, and the code step then fails
like a wrong code), so the pages tell nobody which addresses are registered.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from flask import abort, make_response, redirect, render_template, request, session as ui_state, url_for

from sqlalchemy import select

from idp.crypto.secrets import random_token
from idp.domain.errors import Conflict, DomainError, ServiceUnavailable, Throttled
from idp.login import bp
from idp.login.finish import finish_sign_in
from idp.login.pending import BrowserBoundState
from idp.services import services
from idp.extensions import db
from idp.services.accounts import check_password_policy, validate_email, validate_phone
from idp.storage.models import User
from idp.web.current import client_ip, user_agent

_COOKIE_KEY = "signup_flow"
_state = BrowserBoundState("signup", _COOKIE_KEY)
_load, _save, _discard = _state.load, _state.save, _state.discard
WRONG_CODE = "That code is not right. Check it and try again."
TOO_MANY = "Too many wrong codes. Please start again."
EXPIRED = "Your sign-up took too long. Please start again."
PHONE_TAKEN = "This phone number is already used by another account. Start again with another number or none."


def _require_enabled() -> None:
    if not services().settings.signup_enabled:
        abort(404)


def _binding(signup_id: str) -> str:
    """The id codes are bound to (kept apart from sign-in flow ids)."""
    return f"signup-{signup_id}"


def _recipient(pending: dict) -> SimpleNamespace:
    return SimpleNamespace(id=_binding(pending["id"]), email=pending["email"], phone=pending["phone"])


def _send(pending: dict, channel: str) -> None:
    """A code to the address or phone; for an address that has an account, a warning to its owner instead,
    under the same resend cooldown so the two cases look alike."""
    svc = services()
    if channel == "email" and pending["taken"]:
        cooldown_key = f"oob-cooldown:email:{_binding(pending['id'])}"
        if not svc.store.add(cooldown_key, "1", svc.settings.otp_resend_cooldown):
            wait = svc.store.ttl(cooldown_key) or svc.settings.otp_resend_cooldown
            raise Throttled(f"A code was just sent. You can ask for another in {wait} seconds.", retry_after=wait)
        try:
            svc.notifier.email(pending["email"], "signup_attempt", ip=client_ip())
        except ServiceUnavailable:
            svc.store.delete(cooldown_key)
            raise
        return
    svc.factors.send_code(_recipient(pending), _binding(pending["id"]), channel, purpose="sign-up")


@bp.get("/signup")
def signup():
    _require_enabled()
    notice = EXPIRED if request.args.get("expired") else None
    return render_template("login/signup_start.html", email="", phone="", error=None, notice=notice)


@bp.post("/signup")
def signup_submit():
    _require_enabled()
    svc = services()
    email_input = (request.form.get("email") or "").strip()[:320]
    phone_input = (request.form.get("phone") or "").strip()[:32]
    password = request.form.get("password") or ""

    def again(error: str, status: int = 200):
        return render_template("login/signup_start.html", email=email_input, phone=phone_input, error=error,
                               notice=None), status

    try:
        email = validate_email(email_input)
        phone = validate_phone(phone_input)
        check_password_policy(password, email)
    except DomainError as invalid:
        return again(invalid.public)
    _discard(_load())
    pending = {
        "id": random_token(24),
        "email": email,
        "phone": phone,
        "password_hash": svc.passwords.hash(password),
        "taken": svc.accounts.find_by_email(email) is not None,
        "verified": [],
        "started_at": time.time(),
    }
    try:
        for channel in ("email", "sms") if phone else ("email",):
            _send(pending, channel)
    except (ServiceUnavailable, Throttled) as failure:
        return again(failure.public, failure.status)
    _save(pending)
    ui_state[_COOKIE_KEY] = pending["id"]
    svc.audit.record("sign_up_started", actor_type="system", ip=client_ip(), user_agent=user_agent())
    return redirect(url_for("login.signup_verify"), code=303)


def _verify_page(pending: dict, error: str | None = None, notice: str | None = None, status: int = 200,
                 retry_after: int | None = None):
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return render_template("login/signup_verify.html", email=pending["email"], phone=pending["phone"],
                           verified=pending["verified"], error=error, notice=notice), status, headers


@bp.get("/signup/verify")
def signup_verify():
    _require_enabled()
    pending = _load()
    if pending is None:
        return redirect(url_for("login.signup", expired=1))
    return _verify_page(pending)


@bp.post("/signup/verify")
def signup_verify_submit():
    _require_enabled()
    pending = _load()
    if pending is None:
        return redirect(url_for("login.signup", expired=1))
    svc = services()
    ip = client_ip()
    binding = _binding(pending["id"])
    needed = ["email", "sms"] if pending["phone"] else ["email"]
    fields = {"email": "email_code", "sms": "sms_code"}
    try:
        svc.code_limits.check_ip(ip)
        wrong = False
        for channel in needed:
            if channel in pending["verified"]:
                continue
            code = (request.form.get(fields[channel]) or "").replace(" ", "")
            # A registered address never had a code sent, so nothing can match it.
            if not (channel == "email" and pending["taken"]) and svc.factors.verify_code(
                    _recipient(pending), binding, channel, code):
                pending["verified"].append(channel)
            else:
                wrong = True
        if wrong:
            _save(pending)
            outcome = svc.code_limits.record_failure(binding, ip)
            if outcome.account_locked:
                _discard(pending)
                return render_template("login/signup_start.html", email="", phone="", error=TOO_MANY,
                                       notice=None), 429
            if outcome.ip_blocked:
                wait = svc.settings.code_ip_block_seconds
                return _verify_page(pending, error="Too many wrong codes from your network. Try again later.",
                                    status=429, retry_after=wait)
            return _verify_page(pending, error=WRONG_CODE)
        svc.code_limits.record_success(binding, ip)
    except Throttled as throttled:
        return _verify_page(pending, error=throttled.public, status=429, retry_after=throttled.retry_after)
    except ServiceUnavailable as unavailable:
        return _verify_page(pending, error=unavailable.public, status=503)
    _discard(pending)
    try:
        user = svc.accounts.create_user(pending["email"], None, phone=pending["phone"], email_verified=True,
                                        password_hash=pending["password_hash"])
    except Conflict:
        phone_owner = pending["phone"] and db.session.scalar(select(User).where(User.phone == pending["phone"]))
        message = PHONE_TAKEN if phone_owner else "An account with this email address already exists."
        return render_template("login/signup_start.html", email=pending["email"], phone="", error=message,
                               notice=None), 409
    svc.audit.record("signed_up", user_id=user.id, ip=ip, user_agent=user_agent(),
                     phone=bool(pending["phone"]))
    # A new account has no second factor yet: one step proven; the security page offers to add one.
    response, _ = finish_sign_in(user.id, ["pwd"], url_for("account.security"))
    return response


@bp.post("/signup/resend")
def signup_resend():
    _require_enabled()
    pending = _load()
    if pending is None:
        return redirect(url_for("login.signup", expired=1))
    channel = request.form.get("channel")
    if channel not in ("email", "sms") or (channel == "sms" and not pending["phone"]):
        return _verify_page(pending, error="Choose where to send the code.", status=400)
    try:
        _send(pending, channel)
    except (Throttled, ServiceUnavailable) as failure:
        response = make_response(_verify_page(pending, error=failure.public, status=failure.status))
        if getattr(failure, "retry_after", None):
            response.headers["Retry-After"] = str(failure.retry_after)
        return response
    where = "email address" if channel == "email" else "phone"
    return _verify_page(pending, notice=f"We sent a new code to your {where}.")
