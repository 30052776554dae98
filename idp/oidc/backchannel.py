"""OIDC Back-Channel Logout 1.0: when a session ends, every relying app of that session with a
back-channel logout URI gets a signed logout token, through the durable outbox."""

from __future__ import annotations

import logging
import threading

from flask import current_app
from sqlalchemy import exists, insert, select

from idp.crypto.secrets import random_token
from idp.extensions import db
from idp.notify.delivery import LogoutDeliverer
from idp.services import services
from idp.services.sessions import chunks, session_ended, session_ending, sessions_ended, sessions_ending
from idp.storage.models import Client, LogoutDelivery, SessionClient, new_id, utcnow

log = logging.getLogger("idp.backchannel")

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# §2.4 encourages a short expiry; retries re-send the same token, so it must outlive a few backoffs.
LOGOUT_TOKEN_TTL = 24 * 3600


def logout_token(client: Client, session_id: str, user_id: str | None) -> str:
    svc = services()
    now = int(utcnow().timestamp())
    claims = {
        "iss": svc.settings.issuer,
        "aud": client.client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_TTL,
        "jti": random_token(16),
        "events": {LOGOUT_EVENT: {}},
        "sid": session_id,
    }
    if user_id:
        claims["sub"] = user_id
    return svc.keys.ring().sign(claims, client.id_token_signed_response_alg, typ="logout+jwt")


def enqueue_logouts(session_id: str, user_id: str | None) -> int:
    """One outbox row per relying app of the session, added to the caller's transaction."""
    return enqueue_logouts_for([session_id], user_id)


def enqueue_logouts_for(session_ids: list[str], user_id: str | None) -> int:
    """One outbox row per (session, relying app with a back-channel URI) not queued yet, for many
    sessions at once: one query finds the pairs, one multi-row INSERT queues them. Returns how many."""
    now = utcnow()
    rows = []
    for chunk in chunks(session_ids):
        pairs = db.session.execute(
            select(SessionClient.session_id, Client)
            .join(Client, Client.client_id == SessionClient.client_id)
            .where(
                SessionClient.session_id.in_(chunk),
                Client.backchannel_logout_uri.is_not(None),
                # A session already announced to an app is not queued again (and the unique
                # constraint on (session_id, client_id) would refuse it).
                ~exists().where(LogoutDelivery.session_id == SessionClient.session_id,
                                LogoutDelivery.client_id == SessionClient.client_id),
            )
        ).all()
        rows += [{
            "id": new_id(),
            "session_id": session_id,
            "client_id": client.client_id,
            "user_id": user_id,
            "target_url": client.backchannel_logout_uri,
            "logout_token": logout_token(client, session_id, user_id),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        } for session_id, client in pairs]
    if rows:
        db.session.execute(insert(LogoutDelivery), rows)
    return len(rows)


def pending_for_session(session_id: str) -> list[str]:
    return pending_for_sessions([session_id])


def pending_for_sessions(session_ids: list[str]) -> list[str]:
    pending = []
    for chunk in chunks(session_ids):
        pending += db.session.scalars(select(LogoutDelivery.id).where(
            LogoutDelivery.session_id.in_(chunk), LogoutDelivery.status == "pending"))
    return pending


# Deliveries of one ending that share a thread; a mass logout (a user's thousand sessions) gets a few
# threads, not one per row, so it neither takes minutes nor floods the process with threads.
ROWS_PER_THREAD = 250
MAX_THREADS = 4


def _deliver_soon(app, row_ids: list[str]) -> None:
    """Send right away in a thread so the ending request does not wait on relying apps; the
    outbox worker retries whatever this misses."""

    def run(part: list[str]):
        with app.app_context():
            try:
                LogoutDeliverer().deliver_ids(part)
            except Exception:
                log.exception("immediate back-channel delivery failed; the worker will retry")
            finally:
                db.session.remove()

    threads = min(MAX_THREADS, -(-len(row_ids) // ROWS_PER_THREAD))
    for k in range(threads):
        threading.Thread(target=run, args=(row_ids[k::threads],), name="idp-logout-now", daemon=True).start()


def on_session_ending(sender, session_id: str, user_id: str | None, batched: bool = False, **_):
    # In the ending transaction: the session cannot end without its logouts being queued.
    if not batched:  # sessions ended together are queued at once by on_sessions_ending
        enqueue_logouts(session_id, user_id)


def on_sessions_ending(sender, session_ids: list[str], user_id: str | None, **_):
    enqueue_logouts_for(session_ids, user_id)


def on_session_ended(sender, session_id: str, batched: bool = False, **_):
    if not batched:
        _deliver_pending([session_id])


def on_sessions_ended(sender, session_ids: list[str], **_):
    # One thread for the whole set: a thousand sessions must not start a thousand threads.
    _deliver_pending(session_ids)


def _deliver_pending(session_ids: list[str]) -> None:
    if not current_app.config.get("IDP_DELIVER_LOGOUTS_IMMEDIATELY", True):
        return
    row_ids = pending_for_sessions(session_ids)
    db.session.commit()
    if row_ids:
        _deliver_soon(current_app._get_current_object(), row_ids)


def init_backchannel(app) -> None:
    session_ending.connect(on_session_ending)
    session_ended.connect(on_session_ended)
    sessions_ending.connect(on_sessions_ending)
    sessions_ended.connect(on_sessions_ended)
