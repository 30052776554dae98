"""The JSON shapes of sessions, devices, users and events, shared by the APIs and the pages."""

from __future__ import annotations

from sqlalchemy import select

from idp.extensions import db
from idp.services.user_agents import describe_user_agent
from idp.storage.models import AuditEvent, BrowserSession, Client, SessionClient, TrustedDevice, User


def _iso(value):
    return value.isoformat() if value else None


def clients_by_session(session_ids: list[str]) -> dict[str, list[dict]]:
    result: dict[str, list[dict]] = {sid: [] for sid in session_ids}
    if not session_ids:
        return result
    rows = db.session.execute(
        select(SessionClient.session_id, Client.client_id, Client.name, SessionClient.first_seen_at)
        .join(Client, Client.client_id == SessionClient.client_id)
        .where(SessionClient.session_id.in_(session_ids))
        .order_by(SessionClient.first_seen_at)
    ).all()
    for session_id, client_id, name, first_seen in rows:
        result[session_id].append({"client_id": client_id, "name": name, "signed_in_at": _iso(first_seen)})
    return result


def session_json(session: BrowserSession, clients: list[dict], current_id: str | None = None) -> dict:
    app = None
    if clients or session.app_version:
        app = {"name": clients[0]["name"] if clients else None, "version": session.app_version}
    return {
        "id": session.id,
        "current": session.id == current_id,
        "created_at": _iso(session.created_at),
        "last_active_at": _iso(session.last_active_at),
        "ip": session.ip,
        "user_agent": session.user_agent,
        "device": describe_user_agent(session.user_agent),
        "app": app,
        "clients": clients,
        "amr": list(session.amr or []),
        "acr": session.acr,
    }


def sessions_json(sessions: list[BrowserSession], current_id: str | None = None) -> list[dict]:
    clients = clients_by_session([s.id for s in sessions])
    return [session_json(s, clients[s.id], current_id) for s in sessions]


def device_json(device: TrustedDevice) -> dict:
    return {
        "id": device.id,
        "name": device.name,
        "created_at": _iso(device.created_at),
        "last_used_at": _iso(device.last_used_at),
        "expires_at": _iso(device.expires_at),
        "ip": device.ip,
        "device": describe_user_agent(device.user_agent),
    }


def user_json(user: User, factors: list[str] | None = None) -> dict:
    data = {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": user.name,
        "phone": user.phone,
        "phone_verified": user.phone_verified,
        "is_admin": user.is_admin,
        "locked": user.locked_at is not None,
        "locked_at": _iso(user.locked_at),
        "created_at": _iso(user.created_at),
    }
    if factors is not None:
        data["second_factors"] = factors
    return data


def event_json(event: AuditEvent) -> dict:
    return {
        "id": event.id,
        "occurred_at": _iso(event.occurred_at),
        "event": event.event,
        "actor": {"type": event.actor_type, "id": event.actor_id},
        "session_id": event.session_id,
        "client_id": event.client_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "details": event.details or {},
    }
