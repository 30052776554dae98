"""/admin/tokens/revoke: revoke an access or refresh token of any client, e.g. one reported leaked."""

from __future__ import annotations

from flask import render_template, request

from idp.admin import bp
from idp.admin.guards import admin_action, admin_actions, admin_page

# A signed JWT access token or an opaque refresh token; anything longer is not ours.
MAX_TOKEN_LENGTH = 8192


@bp.get("/admin/tokens/revoke")
@admin_page
def revoke_token_form():
    return render_template("admin/revoke_token.html", error=None, notice=None)


@bp.post("/admin/tokens/revoke")
@admin_action(back="admin.revoke_token_form")
def revoke_token():
    # The token travels in the form body only, never in a URL or a flash cookie.
    token = (request.form.get("token") or "").strip()
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return render_template("admin/revoke_token.html", error="Paste an access token or a refresh token.",
                               notice=None), 400
    if not admin_actions().revoke_token(token):
        return render_template("admin/revoke_token.html", notice=None,
                               error="No token issued here matches; it may have expired or been mistyped."), 404
    return render_template("admin/revoke_token.html", error=None,
                           notice="The token was revoked. A refresh token takes its whole grant with it.")
