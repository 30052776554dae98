"""/account/security: password, authenticator apps, email and SMS codes, recovery codes."""

from __future__ import annotations

import io

import segno
from flask import flash, g, redirect, render_template, request, url_for
from markupsafe import Markup

from idp.account import bp
from idp.account.reauth import recently_signed_in, signed_in
from idp.crypto.otp import totp_uri
from idp.domain.errors import DomainError
from idp.services import services
from idp.web.current import client_ip, user_agent


def qr_svg(data: str) -> Markup:
    """The QR code drawn here as inline SVG: the key never leaves the server for a third-party service."""
    buffer = io.BytesIO()
    segno.make(data, error="m").save(buffer, kind="svg", scale=4, xmldecl=False, svgns=True, nl=False,
                                     title="QR code for your authenticator app")
    return Markup(buffer.getvalue().decode())


def audit(event: str, **details) -> None:
    services().audit.record(event, user_id=g.account_user.id, session_id=g.account_session.id, ip=client_ip(),
                            user_agent=user_agent(), **details)


def factor_added(had_factor_before: bool, method: str | None = None) -> None:
    """SPEC §6.1: enabling two-step verification ends every other session."""
    if method:
        audit("factor_added", method=method)
    if not had_factor_before:
        services().sessions.end_all_for_user(g.account_user.id, "second_factor_enabled",
                                             except_session_id=g.account_session.id, actor_type="user",
                                             actor_id=g.account_user.id)


def factors_reset_trust(method: str | None = None) -> None:
    """Removing a factor changes what a trusted browser vouched for: trust is given again, not kept."""
    if method:
        audit("factor_removed", method=method)
    services().devices.forget_all(g.account_user.id)


@bp.get("/account/security")
@signed_in
def security():
    svc = services()
    user = g.account_user
    return render_template(
        "account/security.html",
        user=user,
        totp_credentials=svc.factors.totp_credentials(user),
        passkeys=svc.webauthn.list(user),
        recovery_left=svc.factors.recovery_codes_left(user.id),
        has_factor=svc.factors.has_second_factor(user),
        recovery_codes=None,
    )


@bp.route("/account/security/totp", methods=["GET", "POST"])
@recently_signed_in
def totp_enrol():
    svc = services()
    user = g.account_user
    error = None
    if request.method == "POST":
        enrolment_id = request.form.get("enrolment_id", "")
        had_factor = svc.factors.has_second_factor(user)
        try:
            confirmed = svc.factors.confirm_totp_enrolment(user, enrolment_id, request.form.get("code", "").strip(),
                                                           request.form.get("name"))
        except DomainError as expired:
            flash(expired.public, "error")
            return redirect(url_for("account.totp_enrol"))
        if confirmed:
            factor_added(had_factor, "totp")
            flash("Your authenticator app is set up.", "notice")
            return redirect(url_for("account.security"))
        error = "That code is not right. Check the time on your phone and try the current code."
        secret = svc.factors.pending_totp_secret(user, enrolment_id)
        uri = totp_uri(secret, user.email, svc.settings.product_name) if secret else None
    else:
        enrolment_id, secret, uri = svc.factors.begin_totp_enrolment(user)
    return render_template("account/totp_enrol.html", enrolment_id=enrolment_id, secret=secret,
                           qr=qr_svg(uri) if uri else None, error=error), (200 if error is None else 400)


@bp.post("/account/security/totp/<credential_id>/delete")
@recently_signed_in
def totp_remove(credential_id: str):
    if services().factors.remove_totp(g.account_user, credential_id):
        factors_reset_trust("totp")
        flash("The authenticator app was removed.", "notice")
    return redirect(url_for("account.security"))


# Sent-code methods: (user flag, what must be verified first, its message, the name people read).
_CODE_CHANNELS = {
    "email": ("email_otp_enabled", lambda u: u.email_verified, "Verify your email address first.", "Email codes"),
    "sms": ("sms_otp_enabled", lambda u: bool(u.phone and u.phone_verified), "Add and verify a phone number first.",
            "SMS codes"),
}


@bp.post("/account/security/email-codes", defaults={"channel": "email"}, endpoint="email_codes")
@bp.post("/account/security/sms-codes", defaults={"channel": "sms"}, endpoint="sms_codes")
@recently_signed_in
def code_channel(channel: str):
    """Turn email or SMS codes on or off; only for a verified address or number."""
    flag, verified, unverified_message, label = _CODE_CHANNELS[channel]
    svc = services()
    user = g.account_user
    enable = request.form.get("enabled") == "1"
    if enable and not verified(user):
        flash(unverified_message, "error")
        return redirect(url_for("account.security"))
    had_factor = svc.factors.has_second_factor(user)
    setattr(user, flag, enable)
    svc.accounts.save(user)
    if enable:
        factor_added(had_factor, channel)
    else:
        factors_reset_trust(channel)
    flash(f"{label} are on." if enable else f"{label} are off.", "notice")
    return redirect(url_for("account.security"))


@bp.post("/account/security/recovery-codes")
@recently_signed_in
def recovery_codes():
    svc = services()
    user = g.account_user
    if not svc.factors.has_second_factor(user):
        flash("Set up a second factor first; recovery codes stand in for it.", "error")
        return redirect(url_for("account.security"))
    codes = svc.factors.regenerate_recovery_codes(user)
    audit("recovery_codes_regenerated")
    # Shown once, in this response only; the server keeps only their hashes.
    return render_template("account/recovery_codes.html", codes=codes)


@bp.post("/account/security/password")
@recently_signed_in
def change_password():
    svc = services()
    user = g.account_user
    try:
        svc.accounts.change_password(user, request.form.get("current_password", ""),
                                     request.form.get("new_password", ""), request.form.get("confirm_password", ""))
    except DomainError as problem:
        flash(problem.public, "error")
        return redirect(url_for("account.security"))
    audit("password_changed")
    # SPEC §6.6: a new password ends every other session and forgets every trusted device.
    ended = svc.sessions.end_all_for_user(user.id, "password_changed", except_session_id=g.account_session.id,
                                          actor_type="user", actor_id=user.id)
    svc.devices.forget_all(user.id)
    flash(f"Your password was changed. {ended} other session(s) were signed out.", "notice")
    return redirect(url_for("account.security"))
