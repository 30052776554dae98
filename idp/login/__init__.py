"""The hosted sign-in chain. Produces an AuthResult; never imports the oidc room."""

from flask import Blueprint

bp = Blueprint("login", __name__)

from idp.login import invitation, passkey, reset, second_factor, signup, views  # noqa: E402,F401  (registers the routes)
