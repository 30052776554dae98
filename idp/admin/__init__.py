"""Admin pages: find a person, see and end their sessions, reset their second factors, lock and unlock,
revoke tokens, register and edit relying apps. Viewing needs an administrator's sign-in; every change
needs a recent one, a POST and the CSRF token (Flask-WTF checks every POST)."""

from flask import Blueprint

bp = Blueprint("admin", __name__)

from idp.admin import clients, deliveries, invitations, tokens, users  # noqa: E402,F401  (registers the routes)
