"""OIDC Back-Channel Logout 1.0: when a session ends, every relying app of that session with a
back-channel logout URI gets a signed logout token, through the durable outbox."""

from __future__ import annotations

import logging
import threading

from flask import current_app
from sqlalchemy import select

from idp.crypto.secrets import random_token
from idp.extensions import db
from idp.notify.delivery import LogoutDeliverer
from idp.services import services
from idp.services.sessions import session_ended, session_ending
from idp.storage.models import Client, LogoutDelivery, SessionClient, utcnow

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


def enqueue_logouts(session_id: str, user_id: str | None) -> None:
    """One outbox row per relying app of the session, added to the caller's transaction."""
    queued = set(db.session.scalars(select(LogoutDelivery.client_id).where(LogoutDelivery.session_id == session_id)))
    clients = db.session.execute(
        select(Client)
        .join(SessionClient, SessionClient.client_id == Client.client_id)
        .where(SessionClient.session_id == session_id, Client.backchannel_logout_uri.is_not(None))
    ).scalars().all()
    for client in clients:
        if client.client_id in queued:
            continue
        db.session.add(LogoutDelivery(
            session_id=session_id,
            client_id=client.client_id,
            user_id=user_id,
            target_url=client.backchannel_logout_uri,
            logout_token=logout_token(client, session_id, user_id),
        ))


def pending_for_session(session_id: str) -> list[str]:
    return list(db.session.scalars(select(LogoutDelivery.id).where(
        LogoutDelivery.session_id == session_id, LogoutDelivery.status == "pending")))


def _deliver_soon(app, row_ids: list[str]) -> None:
    """Send right away in a thread so the ending request does not wait on relying apps; the
    outbox worker retries whatever this misses."""

    def run():
        with app.app_context():
            try:
                LogoutDeliverer().deliver_ids(row_ids)
            except Exception:
                log.exception("immediate back-channel delivery failed; the worker will retry")
            finally:
                db.session.remove()

    threading.Thread(target=run, name="idp-logout-now", daemon=True).start()


def on_session_ending(sender, session_id: str, user_id: str | None, **_):
    # In the ending transaction: the session cannot end without its logouts being queued.
    enqueue_logouts(session_id, user_id)


def on_session_ended(sender, session_id: str, **_):
    if not current_app.config.get("IDP_DELIVER_LOGOUTS_IMMEDIATELY", True):
        return
    row_ids = pending_for_session(session_id)
    db.session.commit()
    if row_ids:
        _deliver_soon(current_app._get_current_object(), row_ids)


def init_backchannel(app) -> None:
    session_ending.connect(on_session_ending)
    session_ended.connect(on_session_ended)
