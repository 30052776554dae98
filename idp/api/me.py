"""/api/me: a relying app acting for the signed-in person (scope `sessions`)."""

from __future__ import annotations

from flask import g, jsonify

from idp.api import bp
from idp.api.auth import actor, api_error, json_body, require_scope, require_user
from idp.api.serializers import device_json, sessions_json
from idp.domain.errors import DomainError
from idp.extensions import csrf
from idp.services import services

csrf.exempt(bp)


@bp.get("/me/sessions")
@require_scope("sessions")
@require_user
def my_sessions():
    sessions = services().sessions.active_for_user(g.api_user.id)
    return jsonify({"sessions": sessions_json(sessions, g.api_token.session_id)})


@bp.delete("/me/sessions/<session_id>")
@require_scope("sessions")
@require_user
def end_my_session(session_id: str):
    svc = services()
    session = svc.sessions.get(session_id)
    # Another person's session, or one that has ended, is simply not found: no probing.
    if session is None or session.user_id != g.api_user.id or session.ended_at is not None:
        return api_error(404, "not_found", "No such session.")
    actor_type, actor_id = actor()
    svc.sessions.end(session_id, "ended_by_user", actor_type, actor_id)
    return "", 204


@bp.post("/me/sessions/terminate-others")
@require_scope("sessions")
@require_user
def end_my_other_sessions():
    actor_type, actor_id = actor()
    ended = services().sessions.end_all_for_user(g.api_user.id, "ended_by_user",
                                                 except_session_id=g.api_token.session_id,
                                                 actor_type=actor_type, actor_id=actor_id)
    return jsonify({"ended": ended})


@bp.get("/me/devices")
@require_scope("sessions")
@require_user
def my_devices():
    return jsonify({"devices": [device_json(d) for d in services().devices.list(g.api_user.id)]})


@bp.patch("/me/devices/<device_id>")
@require_scope("sessions")
@require_user
def rename_my_device(device_id: str):
    body = json_body()
    if body is None or not isinstance(body.get("name"), str):
        return api_error(400, "invalid_request", 'Send a JSON object {"name": "…"}.')
    try:
        device = services().devices.rename(g.api_user.id, device_id, body["name"])
    except DomainError as problem:
        return api_error(problem.status, problem.code, problem.public)
    return jsonify(device_json(device))


@bp.delete("/me/devices/<device_id>")
@require_scope("sessions")
@require_user
def forget_my_device(device_id: str):
    if not services().devices.forget(g.api_user.id, device_id):
        return api_error(404, "not_found", "No such device.")
    return "", 204
