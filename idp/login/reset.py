"""/reset (SPEC §4, §6.10): forgotten password. `username`; then `email_code` (and `sms_code` when a
verified phone is on file); then `password`.

Enumeration (CONFORMANCE D08): the first step gives the same page, status and (padded) timing whether
or not the address has an account; a code is sent only when it has one, and the code step then simply
never matches. The SMS field is shown only after the email code was right: showing it on the first
code page only for accounts with a phone would tell anyone which addresses have accounts (and phones),
whereas whoever got past the email code already owns the mailbox. Both codes are sent at step 1; the
SMS one can be resent from its page.

The reset in progress lives in the shared store under an opaque id held in this browser's signed UI
cookie, with a deadline (login_flow_ttl). A reset never signs anyone in: afterwards the person signs
in with the new password and, when they have one, their second factor.
"""

from __future__ import annotations

import logging
import time

from flask import make_response, redirect, render_template, request, session as ui_state, url_for

from idp.crypto.secrets import random_token
from idp.domain.errors import DeliveryUnavailable, DomainError, ServiceUnavailable, Throttled
from idp.login import bp
from idp.login.pending import BrowserBoundState
from idp.services import services
from idp.services.accounts import normalise_email
from idp.services.limits import minutes
from idp.web.current import client_ip, user_agent

log = logging.getLogger("idp.reset")

_COOKIE_KEY = "reset_flow"
_state = BrowserBoundState("reset", _COOKIE_KEY)
_load, _save, _discard = _state.load, _state.save, _state.discard
WRONG_CODE = "That code is not right. Check it and try again."
TOO_MANY = "Too many wrong codes. Please start again."
EXPIRED = "Your password reset took too long. Please start again."
ENTER_EMAIL = "Enter the email address of your account."

CODES, PASSWORD = "codes", "password"  # steps after the first


def _binding(reset_id: str) -> str:
    """The id codes and failure counts are bound to (apart from sign-in and sign-up flow ids)."""
    return f"reset-{reset_id}"


def _user(pending: dict):
    if not pending.get("user_id"):
        return None
    user = services().accounts.get(pending["user_id"])
    return user if user is not None and user.disabled_at is None else None


def _start_page(error: str | None = None, notice: str | None = None, username: str = "", status: int = 200,
                retry_after: int | None = None):
    response = make_response(render_template("login/reset_start.html", error=error, notice=notice,
                                             username=username), status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _codes_page(pending: dict, error: str | None = None, notice: str | None = None, status: int = 200,
                retry_after: int | None = None):
    email_done = "email" in pending["verified"]
    response = make_response(render_template(
        "login/reset_codes.html", email=pending["email"], email_done=email_done,
        # Only after the email code: the mailbox owner may learn that a phone is on file.
        ask_sms=email_done and pending["phone"] and "sms" not in pending["verified"],
        error=error, notice=notice), status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _password_page(error: str | None = None, status: int = 200):
    return make_response(render_template("login/reset_password.html", error=error), status)


def _throttle(email: str, ip: str | None) -> None:
    """Per-account and per-IP limits on reset requests, counted whether or not the account exists."""
    s, store = services().settings, services().store
    for key, limit in ((f"reset:acct:{email}", s.password_reset_per_account),
                       (f"reset:ip:{ip or '-'}", s.password_reset_per_ip)):
        count = store.incr(key, s.password_reset_window)
        if count > limit:
            wait = store.ttl(key) or s.password_reset_window
            raise Throttled(f"Too many password reset requests. Try again in {minutes(wait)}.", retry_after=wait)


def _pad(started: float) -> None:
    floor = services().settings.password_reset_min_response_ms / 1000
    left = started + floor - time.monotonic()
    if left > 0:
        time.sleep(left)


@bp.get("/reset")
def reset():
    notice = EXPIRED if request.args.get("expired") else None
    return _start_page(notice=notice)


@bp.post("/reset")
def reset_submit():
    started = time.monotonic()
    svc = services()
    ip = client_ip()
    username = (request.form.get("username") or "").strip()[:320]
    email = normalise_email(username)
    if not email or "@" not in email:
        return _start_page(error=ENTER_EMAIL, username=username)
    try:
        _throttle(email, ip)
        _discard(_load())
        user = svc.accounts.find_by_email(email)
        if user is not None and user.disabled_at is not None:
            user = None
        pending = {
            "id": random_token(24),
            "user_id": user.id if user else None,
            "email": email,
            "phone": bool(user and user.phone and user.phone_verified),
            "verified": [],
            "step": CODES,
            "started_at": time.time(),
        }
        if user is not None:
            _send_codes(user, pending)
        _save(pending)
    except Throttled as throttled:
        _pad(started)
        return _start_page(error=throttled.public, username=username, status=429,
                           retry_after=throttled.retry_after)
    except ServiceUnavailable as unavailable:
        return _start_page(error=unavailable.public, username=username, status=503)
    ui_state[_COOKIE_KEY] = pending["id"]
    svc.audit.record("password_reset_requested", user_id=pending["user_id"], actor_type="system", ip=ip,
                     user_agent=user_agent())
    _pad(started)
    return redirect(url_for("login.reset_codes"), code=303)


def _send_codes(user, pending: dict) -> None:
    """A mail or SMS outage must not answer differently for existing accounts (that would tell
    which addresses have one): log it; the person can ask for the code again once it is back."""
    binding = _binding(pending["id"])
    channels = ["email", "sms"] if pending["phone"] else ["email"]
    for channel in channels:
        try:
            services().factors.send_code(user, binding, channel, purpose="password reset")
        except DeliveryUnavailable as unavailable:
            log.error("password reset code by %s not sent: %s", channel, unavailable.detail)


def _at_codes_step(redirect_code: int):
    """The pending reset while it waits for its codes, or else the response that sends the browser
    where it belongs: back to the start when nothing is pending, on to the new password once the
    codes are done (303 after a POST)."""
    pending = _load()
    if pending is None:
        return None, redirect(url_for("login.reset", expired=1))
    if pending["step"] == PASSWORD:
        return None, redirect(url_for("login.reset_password"), code=redirect_code)
    return pending, None


@bp.get("/reset/codes")
def reset_codes():
    pending, elsewhere = _at_codes_step(redirect_code=302)
    return elsewhere or _codes_page(pending)


@bp.post("/reset/codes")
def reset_codes_submit():
    pending, elsewhere = _at_codes_step(redirect_code=303)
    if elsewhere:
        return elsewhere
    svc = services()
    ip = client_ip()
    binding = _binding(pending["id"])
    user = _user(pending)
    try:
        svc.code_limits.check_ip(ip)
        wrong = False
        for channel, field in (("email", "email_code"), ("sms", "sms_code")):
            if channel in pending["verified"] or (channel == "sms" and not pending["phone"]):
                continue
            if channel == "sms" and "email" not in pending["verified"]:
                break  # the SMS field comes after the email code
            code = (request.form.get(field) or "").replace(" ", "")
            if channel == "sms" and not code:
                break  # the email code was just confirmed; the page asks for this one next
            if user is not None and svc.factors.verify_code(user, binding, channel, code):
                pending["verified"].append(channel)
            else:
                wrong = True
                break
        if wrong:
            _save(pending)
            # Failures count per reset (and per IP): wrong guesses here must not let strangers lock accounts.
            outcome = svc.code_limits.record_failure(binding, ip)
            if outcome.account_locked:
                _discard(pending)
                return _start_page(error=TOO_MANY, status=429)
            if outcome.ip_blocked:
                wait = svc.settings.code_ip_block_seconds
                return _codes_page(pending, error=f"Too many wrong codes from your network. Try again in "
                                                  f"{minutes(wait)}.", status=429, retry_after=wait)
            return _codes_page(pending, error=WRONG_CODE)
        svc.code_limits.record_success(binding, ip)
    except Throttled as throttled:
        return _codes_page(pending, error=throttled.public, status=429, retry_after=throttled.retry_after)
    except ServiceUnavailable as unavailable:
        return _codes_page(pending, error=unavailable.public, status=503)
    needed = ["email", "sms"] if pending["phone"] else ["email"]
    if all(channel in pending["verified"] for channel in needed):
        pending["step"] = PASSWORD
        if not _save(pending):
            return redirect(url_for("login.reset", expired=1), code=303)
        return redirect(url_for("login.reset_password"), code=303)
    if not _save(pending):
        return redirect(url_for("login.reset", expired=1), code=303)
    return _codes_page(pending, notice="Email address confirmed. Now enter the code we sent to your phone.")


@bp.post("/reset/resend")
def reset_resend():
    pending, elsewhere = _at_codes_step(redirect_code=303)
    if elsewhere:
        return elsewhere
    svc = services()
    channel = request.form.get("channel")
    if channel not in ("email", "sms") or channel in pending["verified"] or (
            channel == "sms" and ("email" not in pending["verified"] or not pending["phone"])):
        return _codes_page(pending, error="Choose where to send the code.", status=400)
    binding = _binding(pending["id"])
    user = _user(pending)
    try:
        if user is not None:
            svc.factors.send_code(user, binding, channel, purpose="password reset")
        else:
            # The same cooldown as a real resend, so the two cases look alike.
            cooldown_key = f"oob-cooldown:{channel}:{binding}"
            if not svc.store.add(cooldown_key, "1", svc.settings.otp_resend_cooldown):
                wait = svc.store.ttl(cooldown_key) or svc.settings.otp_resend_cooldown
                raise Throttled(f"A code was just sent. You can ask for another in {wait} seconds.",
                                retry_after=wait)
    except (Throttled, ServiceUnavailable) as failure:
        return _codes_page(pending, error=failure.public, status=failure.status,
                           retry_after=getattr(failure, "retry_after", None))
    where = "email address" if channel == "email" else "phone"
    return _codes_page(pending, notice=f"If an account exists, we sent a new code to your {where}.")


@bp.get("/reset/password")
def reset_password():
    pending = _load()
    if pending is None:
        return redirect(url_for("login.reset", expired=1))
    if pending["step"] != PASSWORD:
        return redirect(url_for("login.reset_codes"))
    return _password_page()


@bp.post("/reset/password")
def reset_password_submit():
    pending = _load()
    if pending is None:
        return redirect(url_for("login.reset", expired=1), code=303)
    if pending["step"] != PASSWORD:
        return redirect(url_for("login.reset_codes"), code=303)
    svc = services()
    user = _user(pending)
    if user is None:  # deleted or disabled meanwhile
        _discard(pending)
        return _start_page(error=EXPIRED, status=400)
    try:
        svc.accounts.set_password(user, request.form.get("password") or "")
    except ServiceUnavailable as unavailable:
        return _password_page(error=unavailable.public, status=503)
    except DomainError as rejected:
        return _password_page(error=rejected.public)
    _discard(pending)
    ip, agent = client_ip(), user_agent()
    ended = svc.sessions.end_all_for_user(user.id, "password_reset", actor_type="user", actor_id=user.id)
    forgotten = svc.devices.forget_all(user.id)
    svc.audit.record("password_reset", user_id=user.id, ip=ip, user_agent=agent, sessions_ended=ended,
                     devices_forgotten=forgotten)
    try:
        svc.notifier.email(user.email, "password_reset", ip=ip)
    except ServiceUnavailable as unavailable:  # the password is changed; the notice is best effort
        log.warning("password reset notice not sent: %s", unavailable.detail)
    return render_template("login/reset_done.html")
