"""The session cookie: HttpOnly, SameSite=Lax, Secure and __Host- prefixed when the issuer is https."""

from __future__ import annotations

from flask import current_app, request
from flask.sessions import SecureCookieSessionInterface


def session_cookie_name() -> str:
    return "__Host-idp_session" if current_app.extensions["idp"].settings.is_https else "idp_session"


def read_session_cookie() -> str | None:
    return request.cookies.get(session_cookie_name())


def set_session_cookie(response, token: str, max_age: int) -> None:
    settings = current_app.extensions["idp"].settings
    response.set_cookie(
        session_cookie_name(),
        token,
        max_age=max_age,
        path="/",
        secure=settings.is_https,
        httponly=True,
        samesite="Lax",
    )


def clear_session_cookie(response) -> None:
    settings = current_app.extensions["idp"].settings
    response.delete_cookie(session_cookie_name(), path="/", secure=settings.is_https, httponly=True, samesite="Lax")


def device_cookie_name() -> str:
    return "__Host-idp_device" if current_app.extensions["idp"].settings.is_https else "idp_device"


def read_device_cookie() -> str | None:
    return request.cookies.get(device_cookie_name())


def set_device_cookie(response, token: str, max_age: int) -> None:
    """A persistent cookie: it proves a trusted browser, never a session (NIST SP 800-63B §7.2)."""
    settings = current_app.extensions["idp"].settings
    response.set_cookie(device_cookie_name(), token, max_age=max_age, path="/", secure=settings.is_https,
                        httponly=True, samesite="Lax")


def known_browser_cookie_name() -> str:
    return "__Host-idp_known" if current_app.extensions["idp"].settings.is_https else "idp_known"


def read_known_browser_cookie() -> str | None:
    return request.cookies.get(known_browser_cookie_name())


def set_known_browser_cookie(response, value: str) -> None:
    """Remembers that this person signed in here before, so the next sign-in sends no new-device email."""
    settings = current_app.extensions["idp"].settings
    response.set_cookie(known_browser_cookie_name(), value, max_age=400 * 24 * 3600, path="/",
                        secure=settings.is_https, httponly=True, samesite="Lax")


class SignedCookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session (the sign-in form's CSRF token and flow state), without building
    its signer for requests that carry no such cookie, such as every call of an app or a resource
    server: that alone was a third of the discovery endpoint's time in the app."""

    def open_session(self, app, request):
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)
