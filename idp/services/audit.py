"""Audit trail (SPEC §6.11): every security event in the database and as one JSON log line."""

from __future__ import annotations

import json
import logging

from flask import current_app
from sqlalchemy import insert, select

from idp.extensions import db
from idp.storage.models import AuditEvent, new_id, utcnow
from idp.storage.rows import execute_core

log = logging.getLogger("idp.audit")

_INSERT_AUDIT_EVENT = AuditEvent.__table__.insert()


class Audit:
    def record(
        self,
        event: str,
        *,
        user_id: str | None = None,
        actor_type: str = "user",
        actor_id: str | None = None,
        session_id: str | None = None,
        client_id: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        commit: bool = True,
        **details,
    ) -> None:
        actor_id = actor_id if actor_id is not None else (user_id if actor_type == "user" else None)
        # A plain INSERT built once: every sign-in writes one, and the ORM's unit of work cost more
        # than the statement. It runs in the caller's transaction, as the ORM row did.
        execute_core(_INSERT_AUDIT_EVENT, {
            "id": new_id(), "occurred_at": utcnow(), "event": event, "user_id": user_id,
            "actor_type": actor_type, "actor_id": actor_id, "session_id": session_id, "client_id": client_id,
            "ip": ip, "user_agent": (user_agent or "")[:1000] or None, "details": details,
        })
        if commit:
            db.session.commit()
        log.info(json.dumps({
            "event": event, "user_id": user_id, "actor_type": actor_type, "actor_id": actor_id,
            "session_id": session_id, "client_id": client_id, "ip": ip, **details,
        }, default=str))

    def for_user(self, user_id: str, limit: int = 100) -> list[AuditEvent]:
        return list(db.session.scalars(
            select(AuditEvent).where(AuditEvent.user_id == user_id)
            .order_by(AuditEvent.occurred_at.desc()).limit(limit)
        ))


def record_session_end(sender, session_id: str, user_id: str | None, reason: str, actor_type: str = "system",
                       actor_id: str | None = None, batched: bool = False, **_):
    # Runs inside the ending transaction (session_ending): the audit row commits with the end.
    if batched:  # sessions ended together are recorded at once by record_sessions_end
        return
    current_app.extensions["idp"].audit.record("session_ended", user_id=user_id, actor_type=actor_type,
                                               actor_id=actor_id, session_id=session_id, reason=reason,
                                               commit=False)


def record_sessions_end(sender, session_ids: list[str], user_id: str | None, reason: str,
                        actor_type: str = "system", actor_id: str | None = None, **_):
    """The session_ended rows of sessions ended together (sessions_ending), as one multi-row INSERT in the
    ending transaction: a user with a thousand sessions must not cost a thousand ORM objects."""
    if actor_id is None and actor_type == "user":
        actor_id = user_id
    now = utcnow()
    rows = [{"id": new_id(), "occurred_at": now, "event": "session_ended", "user_id": user_id,
             "actor_type": actor_type, "actor_id": actor_id, "session_id": session_id, "client_id": None,
             "ip": None, "user_agent": None, "details": {"reason": reason}} for session_id in session_ids]
    if rows:
        db.session.execute(insert(AuditEvent), rows)
    for session_id in session_ids:
        log.info(json.dumps({"event": "session_ended", "user_id": user_id, "actor_type": actor_type,
                             "actor_id": actor_id, "session_id": session_id, "client_id": None, "ip": None,
                             "reason": reason}))
