"""/api/admin: administrators and admin clients (scope `admin`)."""

from __future__ import annotations

from flask import jsonify, request

from idp.api import bp
from idp.api.auth import actor, api_error, json_body, require_scope
from idp.api.serializers import event_json, sessions_json, user_json
from idp.domain.errors import Conflict
from idp.services import services
from idp.services.accounts import normalise_email
from idp.services.admin_actions import AdminActions


def _user_or_404(user_id: str):
    user = services().accounts.get(user_id)
    return user, (None if user else api_error(404, "not_found", "No such user."))


@bp.get("/admin/users")
@require_scope("admin")
def find_users():
    email = request.args.get("email")
    if not email:
        return api_error(400, "invalid_request", "Give ?email= to find a user.")
    user = services().accounts.find_by_email(normalise_email(email))
    return jsonify({"users": [user_json(user)] if user else []})


@bp.get("/admin/users/<user_id>")
@require_scope("admin")
def get_user(user_id: str):
    user, missing = _user_or_404(user_id)
    return missing or jsonify(user_json(user, services().factors.methods(user)))


@bp.delete("/admin/users/<user_id>")
@require_scope("admin")
def delete_user(user_id: str):
    user, missing = _user_or_404(user_id)
    if missing:
        return missing
    try:
        AdminActions(*actor()).delete_account(user)
    except Conflict as refused:  # the last administrator
        return api_error(409, "conflict", refused.public)
    return "", 204


@bp.get("/admin/users/<user_id>/sessions")
@require_scope("admin")
def user_sessions(user_id: str):
    user, missing = _user_or_404(user_id)
    return missing or jsonify({"sessions": sessions_json(services().sessions.active_for_user(user.id))})


@bp.get("/admin/users/<user_id>/events")
@require_scope("admin")
def user_events(user_id: str):
    user, missing = _user_or_404(user_id)
    return missing or jsonify({"events": [event_json(e) for e in services().audit.for_user(user.id)]})


@bp.delete("/admin/sessions/<session_id>")
@require_scope("admin")
def end_session(session_id: str):
    if not AdminActions(*actor()).end_session(session_id):
        return api_error(404, "not_found", "No such open session.")
    return "", 204


@bp.post("/admin/users/<user_id>/logout")
@require_scope("admin")
def logout_user(user_id: str):
    user, missing = _user_or_404(user_id)
    return missing or jsonify({"ended": AdminActions(*actor()).logout_everywhere(user)})


@bp.post("/admin/users/<user_id>/mfa/reset")
@require_scope("admin")
def reset_mfa(user_id: str):
    user, missing = _user_or_404(user_id)
    return missing or jsonify(AdminActions(*actor()).reset_second_factors(user))


@bp.post("/admin/users/<user_id>/lock")
@require_scope("admin")
def lock_user(user_id: str):
    user, missing = _user_or_404(user_id)
    if missing:
        return missing
    if user.locked_at is not None:
        return api_error(409, "conflict", "The account is already locked.")
    return jsonify(AdminActions(*actor()).lock(user))


@bp.post("/admin/users/<user_id>/unlock")
@require_scope("admin")
def unlock_user(user_id: str):
    user, missing = _user_or_404(user_id)
    if missing:
        return missing
    if user.locked_at is None:
        return api_error(409, "conflict", "The account is not locked.")
    return jsonify(AdminActions(*actor()).unlock(user))


@bp.post("/admin/tokens/revoke")
@require_scope("admin")
def revoke_token():
    body = json_body()
    if body is None or not isinstance(body.get("token"), str) or not body["token"]:
        return api_error(400, "invalid_request", 'Send a JSON object {"token": "…"}.')
    return jsonify({"revoked": AdminActions(*actor()).revoke_token(body["token"])})
