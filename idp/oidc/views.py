"""Authorization endpoint, its resumption after sign-in, and the consent screen."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone

from flask import abort, make_response, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from idp.crypto.secrets import random_token
from idp.extensions import csrf, db
from idp.oidc.authorize import (
    MAX_PARAM_LENGTH,
    SINGLE_VALUE_PARAMS,
    AuthorizationRequest,
    ErrorPage,
    RedirectError,
    parse_authorization_request,
    redirect_with,
    safe_description,
)
from idp.oidc.blueprint import bp
from idp.oidc.interaction import Need, decide, required_acr
from idp.services import services
from idp.storage.models import Consent, utcnow
from idp.web.current import current_session

log = logging.getLogger("idp.oidc")

SCOPE_DESCRIPTIONS = {
    "openid": "Know who you are",
    "profile": "See your name",
    "email": "See your email address",
    "phone": "See your phone number",
    "offline_access": "Stay signed in when you are not using it",
    "sessions": "See and end your sessions",
}


@bp.route("/authorize", methods=["GET", "POST"])
@csrf.exempt  # OIDC Core §3.1.2.1 allows form POST; the request changes no state by itself.
def authorize():
    values = request.args if request.method == "GET" else request.form
    return _handle(values, pending_id=None, signed_in_after=None)


# Where the login page sends the browser back to once it has signed in (see _login_redirect).
_CONTINUE_PREFIX = "/authorize/continue/"


@bp.get(_CONTINUE_PREFIX + "<pending_id>")
def authorize_continue(pending_id: str):
    pending = _load_pending(pending_id)
    return _handle(MultiDict(pending["params"]), pending_id, _from_epoch(pending["signed_in_after"]))


@bp.post("/authorize/consent/<pending_id>")
def authorize_consent(pending_id: str):
    pending = _load_pending(pending_id)
    svc = services()
    try:
        authz = parse_authorization_request(MultiDict(pending["params"]), svc.clients, svc.keys.ring())
    except ErrorPage as error:
        return _error_page(error.message)
    except RedirectError as error:
        return _error_redirect(error)
    session, user = current_session()
    if session is None:
        return _error_page("Your sign-in has ended. Go back to the application and start again.")
    svc.store.delete(_pending_key(pending_id))
    if request.form.get("decision") != "allow":
        return _error_redirect(RedirectError("access_denied", "The user declined the request.", authz))
    consent = db.session.get(Consent, (user.id, authz.client.client_id))
    if consent is None:
        db.session.add(Consent(user_id=user.id, client_id=authz.client.client_id, scope=authz.scope))
    else:
        consent.scope = " ".join(dict.fromkeys(consent.scope.split() + authz.scopes))
        consent.granted_at = utcnow()
    db.session.commit()
    return _issue_code(authz, session)


def answer_after_sign_in(next_url: str, session, user):
    """The authorization request a sign-in was made for, answered in the sign-in's own response when
    it needs nothing more of the person: the browser goes from the last sign-in step straight back
    to the app with its code, not through one more request to /authorize/continue (that hop was a
    fifth of a sign-in's work besides the password hash). None when `next_url` is not such
    a request, or when the request needs a page (consent) or fails: the caller then redirects to
    `next_url`, where /authorize/continue answers it as it always does."""
    if not next_url.startswith(_CONTINUE_PREFIX):
        return None
    pending_id = next_url[len(_CONTINUE_PREFIX):]
    pending = _read_pending(pending_id)
    if pending is None:
        return None
    try:
        authz, need = _assess(MultiDict(pending["params"]), session, user, _from_epoch(pending["signed_in_after"]))
    except (ErrorPage, RedirectError):
        return None
    if need is not Need.NOTHING:
        return None
    services().store.delete(_pending_key(pending_id))
    # 303: the answer to a form post; the browser follows with GET (RFC 9700 §4.12).
    return _issue_code(authz, session, status=303)


def _assess(values, session, user, signed_in_after: datetime | None) -> tuple[AuthorizationRequest, Need]:
    """The request, and what it needs of the person before a code; raises ErrorPage or RedirectError."""
    svc = services()
    authz = parse_authorization_request(values, svc.clients, svc.keys.ring())
    return authz, decide(authz, session, _consent(authz, user), svc.settings.sso_max_age, signed_in_after)


def _consent(authz: AuthorizationRequest, user) -> Consent | None:
    # A first-party app is never asked for consent (needs_consent), so nothing is read for it.
    if user is None or authz.client.first_party:
        return None
    return db.session.get(Consent, (user.id, authz.client.client_id))


def _handle(values, pending_id: str | None, signed_in_after: datetime | None):
    svc = services()
    session, user = current_session()
    try:
        authz, need = _assess(values, session, user, signed_in_after)
    except ErrorPage as error:
        return _error_page(error.message)
    except RedirectError as error:
        if session is None and "none" not in (values.get("prompt") or "").split():
            # RFC 9700 §4.11.2: a registered redirect URI alone does not make it safe to bounce an
            # anonymous visitor there (phishing via a bad scope); sign in first, the resumed request
            # then fails the same way. Silent requests (prompt=none) promise no UI, so they answer now.
            return _login_redirect(_save_pending(_failed_params(values), pending_id, utcnow()), None)
        return _error_redirect(error)
    if need in (Need.LOGIN, Need.STEP_UP):
        return _login_redirect(_save_pending(authz.params, pending_id, utcnow()), authz.login_hint,
                               acr=required_acr(authz), step_up=need is Need.STEP_UP)
    if need is Need.CONSENT:
        pending_id = _save_pending(authz.params, pending_id, signed_in_after=signed_in_after)
        scopes = [(s, SCOPE_DESCRIPTIONS.get(s, s)) for s in authz.scopes]
        return render_template("oidc/consent.html", client=authz.client, scopes=scopes, pending_id=pending_id,
                               user=user)
    if pending_id:
        svc.store.delete(_pending_key(pending_id))
    return _issue_code(authz, session)


def _issue_code(authz: AuthorizationRequest, session, status: int = 302):
    svc = services()
    if authz.app_version and session.app_version != authz.app_version:
        session.app_version = authz.app_version
        db.session.commit()
    scope = authz.scope
    if "admin" in authz.scopes and not svc.accounts.get(session.user_id).is_admin:
        # An admin-capable app used by someone who is not an administrator gets no admin rights.
        scope = " ".join(s for s in authz.scopes if s != "admin")
    code = svc.grants.create_code(
        client_id=authz.client.client_id,
        user_id=session.user_id,
        session_id=session.id,
        redirect_uri=authz.redirect_uri,
        scope=scope,
        nonce=authz.nonce,
        code_challenge=authz.code_challenge,
        code_challenge_method=authz.code_challenge_method,
        auth_time=session.auth_time,
        acr=session.acr,
        amr=session.amr,
    )
    params = {"code": code, "state": authz.state, "iss": svc.settings.issuer}
    return redirect(redirect_with(authz.redirect_uri, params), code=status)


# -- pending requests ------------------------------------------------------------------------


_PENDING_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # random_token(24), with room to spare


def _pending_key(pending_id: str) -> str:
    return f"authz:{pending_id}"


def _login_redirect(pending_id: str, login_hint: str | None, acr: str | None = None, step_up: bool = False):
    next_url = url_for("oidc.authorize_continue", pending_id=pending_id)
    return redirect(url_for("login.sign_in", next=next_url, login_hint=login_hint, acr=acr,
                            step_up=1 if step_up else None))


def _failed_params(values) -> dict:
    """Enough of a refused request to refuse it again after sign-in: two copies still show a
    repetition, one character past the limit still shows an oversized value."""
    return {
        name: [value[: MAX_PARAM_LENGTH + 1] for value in values.getlist(name)[:2]]
        for name in SINGLE_VALUE_PARAMS
        if name in values
    }


def _save_pending(params: dict, pending_id: str | None, signed_in_after: datetime | None) -> str:
    svc = services()
    pending_id = pending_id or random_token(24)
    data = {
        "params": params,
        "signed_in_after": signed_in_after.timestamp() if signed_in_after else None,
    }
    svc.store.set(_pending_key(pending_id), json.dumps(data), svc.settings.login_flow_ttl)
    return pending_id


def _read_pending(pending_id: str) -> dict | None:
    raw = services().store.get(_pending_key(pending_id)) if _PENDING_ID.fullmatch(pending_id) else None
    return json.loads(raw) if raw is not None else None


def _load_pending(pending_id: str) -> dict:
    pending = _read_pending(pending_id)
    if pending is None:
        abort(make_response(_error_page(EXPIRED_REQUEST)))
    return pending


def _from_epoch(value) -> datetime | None:
    return datetime.fromtimestamp(value, timezone.utc) if value else None


# -- responses -------------------------------------------------------------------------------


EXPIRED_REQUEST = (
    "This sign-in request has expired or was already completed. Go back to the application and start again."
)


def _error_page(message: str):
    return render_template("errors/error.html", title="This sign-in request cannot be completed",
                           message=message), 400


def _error_redirect(error: RedirectError):
    log.info("authorization error %s: %s", error.error, error.description)
    params = {
        "error": error.error,
        "error_description": safe_description(error.description),
        "state": error.state,
        "iss": services().settings.issuer,
    }
    return redirect(redirect_with(error.redirect_uri, params), code=302)
