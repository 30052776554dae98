"""JSON APIs for relying apps (/api/me, scope `sessions`) and administrators (/api/admin, scope `admin`)."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from idp.api import admin, invitations, me, openapi  # noqa: E402,F401  (registers the routes)
