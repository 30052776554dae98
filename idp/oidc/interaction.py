"""What an authorization request needs from the person before a code can be issued."""

from __future__ import annotations

import enum
from datetime import datetime

from idp.domain.acr import ACR_SINGLE_FACTOR, ACR_VALUES_SUPPORTED, acr_satisfies
from idp.oidc.authorize import AuthorizationRequest, RedirectError
from idp.storage.models import BrowserSession, Consent, utcnow


class Need(enum.Enum):
    LOGIN = "login"
    # Signed in, but with too weak a method for the requested acr: only the second factor is asked.
    STEP_UP = "step_up"
    CONSENT = "consent"
    NOTHING = "nothing"


STRONGER_AUTHENTICATION = "stronger authentication requested"


def required_acr(request: AuthorizationRequest) -> str | None:
    """The weakest requested acr (any requested value satisfies the app); None when one factor is enough."""
    if not request.acr_values:
        return None
    weakest = min(request.acr_values, key=lambda v: ACR_VALUES_SUPPORTED.index(v))
    return None if weakest == ACR_SINGLE_FACTOR else weakest


def _signed_in_for_this_request(session: BrowserSession, signed_in_after: datetime | None) -> bool:
    return signed_in_after is not None and session.auth_time > signed_in_after


def needs_login(
    request: AuthorizationRequest,
    session: BrowserSession | None,
    sso_max_age: int,
    signed_in_after: datetime | None,
) -> str | None:
    """Why the person must sign in (again), or None. `signed_in_after` marks a sign-in done for this very request."""
    if session is None:
        return "no session"
    if _signed_in_for_this_request(session, signed_in_after):
        return None
    age = (utcnow() - session.auth_time).total_seconds()
    if "login" in request.prompt:
        return "prompt=login"
    if request.max_age is not None and age > request.max_age:
        return "max_age exceeded"
    if age > sso_max_age:
        return "sign-in too old for single sign-on"
    if request.id_token_hint_sub is not None and request.id_token_hint_sub != session.user_id:
        return "id_token_hint names another person"
    if request.acr_values and not _acr_met(request, session):
        return STRONGER_AUTHENTICATION
    return None


def _acr_met(request: AuthorizationRequest, session: BrowserSession) -> bool:
    return any(acr_satisfies(session.acr, v) for v in request.acr_values)


def needs_consent(request: AuthorizationRequest, consent: Consent | None) -> bool:
    if request.client.first_party:
        return False
    if "consent" in request.prompt or consent is None:
        return True
    return not set(request.scopes) <= set(consent.scope.split())


def decide(
    request: AuthorizationRequest,
    session: BrowserSession | None,
    consent: Consent | None,
    sso_max_age: int,
    signed_in_after: datetime | None = None,
) -> Need:
    reason = needs_login(request, session, sso_max_age, signed_in_after)
    if reason is not None:
        if "none" in request.prompt:
            raise RedirectError("login_required", "The user must sign in.", request)
        return Need.STEP_UP if reason == STRONGER_AUTHENTICATION else Need.LOGIN
    if request.acr_values and not _acr_met(request, session):
        # Signed in just now and still short of what the app requires (e.g. no possession factor).
        raise RedirectError("unmet_authentication_requirements",
                            "The user could not be authenticated as strongly as requested.", request)
    if needs_consent(request, consent):
        if "none" in request.prompt:
            raise RedirectError("consent_required", "The user must approve this application.", request)
        return Need.CONSENT
    return Need.NOTHING
