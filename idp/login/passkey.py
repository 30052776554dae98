"""Passkeys in the sign-in chain: assertion options for the second-factor step, and passwordless
sign-in, where one user-verifying passkey is both factors (something you have, unlocked by
something you know or are: NIST SP 800-63B §5.1.9, a multi-factor cryptographic authenticator).

The two options endpoints answer JSON to static/webauthn.js; Flask-WTF checks the CSRF token
the script sends in the X-CSRFToken header.
"""

from __future__ import annotations

import logging

from flask import jsonify, render_template, request, session as ui_state

from idp.crypto.secrets import random_token
from idp.domain.errors import ServiceUnavailable
from idp.login import bp
from idp.login.finish import finish_sign_in
from idp.login.flow import SECOND_FACTOR, current_flow, discard_flow
from idp.services import services
from idp.web.current import client_ip
from idp.web.redirects import safe_next

log = logging.getLogger("idp.login")

# Where this browser's passwordless challenge is filed; the key itself is random and opaque.
_PASSKEY_KEY = "passkey_challenge"
# The same words whatever went wrong: no hint whether a credential or account exists.
PASSKEY_FAILED = "We could not sign you in with that passkey. Try again or use your password."
FLOW_EXPIRED = "Your sign-in took too long or was already finished. Please sign in again."


def _json_error(message: str, status: int = 400, error: str = "invalid_request"):
    return jsonify({"error": error, "error_description": message}), status


@bp.post("/login/2fa/webauthn/options")
def second_factor_webauthn_options():
    svc = services()
    flow = current_flow(SECOND_FACTOR)
    user = svc.accounts.get(flow.user_id) if flow else None
    if flow is None or not svc.accounts.can_sign_in(user):
        discard_flow(flow)
        return _json_error(FLOW_EXPIRED)
    try:
        return jsonify(svc.webauthn.authentication_options(flow.id, user=user))
    except ServiceUnavailable as unavailable:
        return _json_error(unavailable.public, 503, unavailable.code)


@bp.post("/login/passkey/options")
def passkey_options():
    key = random_token(24)
    try:
        options = services().webauthn.authentication_options(_flow_key(key))
    except ServiceUnavailable as unavailable:
        return _json_error(unavailable.public, 503, unavailable.code)
    ui_state[_PASSKEY_KEY] = key
    return jsonify(options)


@bp.post("/login/passkey")
def passkey_sign_in():
    next_url = safe_next(request.form.get("next"))
    key = ui_state.pop(_PASSKEY_KEY, None)
    svc = services()
    if not isinstance(key, str):
        return _failed(next_url, "no passkey challenge in this browser")
    try:
        result = svc.webauthn.verify_authentication(request.form.get("credential", ""), _flow_key(key))
    except ServiceUnavailable as unavailable:
        return render_template("login/sign_in.html", next_url=next_url, username="", error=unavailable.public), 503
    if result is None:
        return _failed(next_url, "assertion rejected")
    if not result.user_verified:
        # Without a PIN or biometric the passkey is one factor, and nothing else was asked.
        return _failed(next_url, "user not verified")
    user = svc.accounts.get(result.credential.user_id)
    if not svc.accounts.can_sign_in(user):
        return _failed(next_url, "account cannot sign in")
    discard_flow(current_flow(SECOND_FACTOR))
    # RFC 8176: a synced passkey is a software-protected key, a device-bound one a hardware key.
    amr = ["swk" if result.credential.backed_up else "hwk", "mfa"]
    response, _ = finish_sign_in(user.id, amr, next_url)
    return response


def _flow_key(key: str) -> str:
    return f"passkey:{key}"


def _failed(next_url: str, reason: str):
    log.info("passkey sign-in failed: %s", reason, extra={"ip": client_ip()})
    return render_template("login/sign_in.html", next_url=next_url, username="", error=PASSKEY_FAILED), 200
