"""/account/security passkeys and security keys: register, list (templates/account/_passkeys.html),
remove. Adding a factor is a sensitive change (SPEC §6.9), hence `recently_signed_in` everywhere."""

from __future__ import annotations

from flask import flash, g, jsonify, redirect, request, url_for

from idp.account import bp
from idp.account.reauth import recently_signed_in
from idp.account.security import audit, factor_added, factors_reset_trust
from idp.domain.errors import DomainError, ServiceUnavailable
from idp.services import services


@bp.post("/account/security/passkeys/options")
@recently_signed_in
def passkey_registration_options():
    """JSON for navigator.credentials.create(); static/webauthn.js sends the CSRF token as X-CSRFToken."""
    try:
        return jsonify(services().webauthn.registration_options(g.account_user))
    except ServiceUnavailable as unavailable:
        return jsonify({"error": unavailable.code, "error_description": unavailable.public}), 503


@bp.post("/account/security/passkeys")
@recently_signed_in
def passkey_register():
    svc = services()
    user = g.account_user
    had_factor = svc.factors.has_second_factor(user)
    try:
        credential = svc.webauthn.finish_registration(user, request.form.get("credential", ""),
                                                      request.form.get("name"))
    except DomainError as problem:
        flash(problem.public, "error")
        return _back()
    factor_added(had_factor)
    audit("factor_added", method="webauthn", credential_id=credential.id, passkey=credential.is_passkey)
    kind = "passkey" if credential.is_passkey else "security key"
    flash(f"Your {kind} “{credential.name}” was added.", "notice")
    return _back()


@bp.post("/account/security/passkeys/<credential_id>/delete")
@recently_signed_in
def passkey_remove(credential_id: str):
    if services().webauthn.remove(g.account_user, credential_id):
        factors_reset_trust()
        audit("factor_removed", method="webauthn", credential_id=credential_id)
        flash("The passkey or security key was removed.", "notice")
    else:
        flash("That passkey or security key was not found; it may have been removed already.", "error")
    return _back()


def _back():
    # 303: the browser comes back with GET and never re-posts the form.
    return redirect(url_for("account.security"), code=303)
