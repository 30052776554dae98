"""Self-service pages of the signed-in person."""

from flask import Blueprint

bp = Blueprint("account", __name__)

from idp.account import contact, deletion, devices, passkeys, security, sessions, views  # noqa: E402,F401  (registers the routes)
