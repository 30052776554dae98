"""/api/admin/invitations: invite by email, list open invitations, cancel one (scope `admin`)."""

from __future__ import annotations

from flask import jsonify

from idp.api import bp
from idp.api.auth import actor, api_error, json_body, require_scope
from idp.domain.errors import Conflict, DomainError
from idp.services.invitations import invitation_json, invitations
from idp.web.current import client_ip, user_agent


@bp.post("/admin/invitations")
@require_scope("admin")
def create_invitation():
    body = json_body()
    if (body is None or not isinstance(body.get("email"), str)
            or not isinstance(body.get("name", ""), (str, type(None)))
            or not isinstance(body.get("admin", False), bool)):
        return api_error(400, "invalid_request", 'Send a JSON object {"email": "…", "name"?: "…", "admin"?: false}.')
    try:
        invitation = invitations().invite(body["email"], body.get("name"), body.get("admin", False), actor(),
                                          client_ip(), user_agent())
    except Conflict as conflict:
        return api_error(409, "conflict", conflict.public)
    except DomainError as invalid:
        return api_error(invalid.status, invalid.code, invalid.public)
    return jsonify(invitation_json(invitation)), 201


@bp.get("/admin/invitations")
@require_scope("admin")
def list_invitations():
    return jsonify({"invitations": [invitation_json(i) for i in invitations().open()]})


@bp.delete("/admin/invitations/<invitation_id>")
@require_scope("admin")
def cancel_invitation(invitation_id: str):
    service = invitations()
    invitation = service.get(invitation_id)
    if invitation is None:
        return api_error(404, "not_found", "No such invitation.")
    try:
        service.cancel(invitation, actor(), client_ip(), user_agent())
    except Conflict as conflict:
        return api_error(409, "conflict", conflict.public)
    return "", 204
