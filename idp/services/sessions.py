"""Server-side sessions: one per sign-in on a browser or app; revocable everywhere at once."""

from __future__ import annotations

from datetime import datetime, timedelta

from blinker import signal
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from idp.crypto.secrets import random_token, sha256_hex
from idp.extensions import db
from idp.storage.models import BrowserSession, SessionClient, TokenFamily, utcnow
from idp.storage.rows import execute_core, row_by_id

# Both carry session_id, user_id, reason, actor_type, actor_id. `session_ending` is sent inside the
# transaction that ends the session, so what its receivers write (the logout outbox, the audit row)
# commits with it or not at all; `session_ended` is sent after the commit, for work outside the database.
# When several sessions end together (end_all_for_user) each still gets both, with batched=True, and
# `sessions_ending` / `sessions_ended` follow once with session_ids: a receiver that can do its work
# for the whole set in a few statements (the logout outbox) does it there and skips the batched ones.
session_ending = signal("idp.session-ending")
session_ended = signal("idp.session-ended")
sessions_ending = signal("idp.sessions-ending")
sessions_ended = signal("idp.sessions-ended")

# Ids per IN (…) list: far below SQLite's bound-parameter limit, and a plan PostgreSQL keeps cheap.
IN_CHUNK = 500


def chunks(values: list, size: int = IN_CHUNK):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def past_limits(session: BrowserSession, idle_ttl: int, now: datetime) -> bool:
    """Past the absolute lifetime, or idle for longer than allowed."""
    return now >= session.expires_at or now >= session.last_active_at + timedelta(seconds=idle_ttl)


# Built once: every page a signed-in browser opens looks its session up.
_SESSION_BY_TOKEN = select(BrowserSession).where(BrowserSession.token_hash == bindparam("token_hash"))
_UPSERTS = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}
_LINK_UPSERTS: dict[str, object] = {}


def _link_upsert(dialect: str):
    """One statement, not a read then a write: both databases have an upsert of the same form.
    Built once per database kind."""
    statement = _LINK_UPSERTS.get(dialect)
    if statement is None:
        insert = _UPSERTS[dialect](SessionClient.__table__)
        statement = _LINK_UPSERTS[dialect] = insert.on_conflict_do_update(
            index_elements=["session_id", "client_id"], set_={"last_seen_at": insert.excluded.last_seen_at})
    return statement


class Sessions:
    def __init__(self, settings):
        self._settings = settings

    def start(
        self,
        result_user_id: str,
        amr,
        acr: str,
        auth_time: datetime,
        ip: str | None,
        user_agent: str | None,
        previous: BrowserSession | None = None,
        app_version: str | None = None,
    ) -> tuple[BrowserSession, str]:
        """Record a completed sign-in. The cookie secret is always new (no fixation).

        The same person signing in again on the same browser keeps the session (so its
        relying apps keep their `sid`) with a fresh secret and authentication time.
        The caller commits, with the sign-in's audit row in the same transaction.
        """
        token = random_token(32)
        now = utcnow()
        if previous is not None and previous.user_id == result_user_id and previous.ended_at is None:
            session = previous
            session.token_hash = sha256_hex(token)
            session.auth_time = auth_time
            session.amr = list(amr)
            session.acr = acr
            session.last_active_at = now
            session.ip = ip
            session.user_agent = user_agent
        else:
            if previous is not None and previous.ended_at is None:
                self.end(previous.id, "signed_in_as_other_user", "user", result_user_id)
            session = BrowserSession(
                token_hash=sha256_hex(token),
                user_id=result_user_id,
                created_at=now,
                last_active_at=now,
                expires_at=now + timedelta(seconds=self._settings.session_absolute_ttl),
                auth_time=auth_time,
                amr=list(amr),
                acr=acr,
                ip=ip,
                user_agent=(user_agent or "")[:1000] or None,
                app_version=app_version,
            )
            db.session.add(session)
        db.session.flush()
        return session, token

    def from_cookie(self, token: str | None) -> BrowserSession | None:
        if not token or not isinstance(token, str) or len(token) > 100:
            return None
        session = db.session.execute(_SESSION_BY_TOKEN, {"token_hash": sha256_hex(token)}).scalar_one_or_none()
        if session is None or session.ended_at is not None:
            return None
        if self.is_expired(session):
            self.end(session.id, "expired")
            return None
        return session

    def get(self, session_id: str) -> BrowserSession | None:
        return row_by_id(BrowserSession, session_id)

    def is_expired(self, session: BrowserSession, now: datetime | None = None) -> bool:
        return past_limits(session, self._settings.session_idle_ttl, now or utcnow())

    def touch(self, session: BrowserSession) -> None:
        """Record activity, at most once per interval: a write per page view would cost more than it tells."""
        now = utcnow()
        if (now - session.last_active_at).total_seconds() >= self._settings.session_touch_interval:
            db.session.execute(
                update(BrowserSession).where(BrowserSession.id == session.id).values(last_active_at=now)
            )
            db.session.commit()

    def touch_by_id(self, session_id: str | None) -> None:
        if not session_id:
            return
        threshold = utcnow() - timedelta(seconds=self._settings.session_touch_interval)
        result = db.session.execute(
            update(BrowserSession)
            .where(
                BrowserSession.id == session_id,
                BrowserSession.ended_at.is_(None),
                BrowserSession.last_active_at < threshold,
            )
            .values(last_active_at=utcnow())
        )
        if result.rowcount:
            db.session.commit()

    def add_client(self, session_id: str, client_id: str) -> None:
        """Note that an app received tokens through this session; the caller commits."""
        now = utcnow()
        execute_core(_link_upsert(db.session.get_bind().dialect.name),
                     {"session_id": session_id, "client_id": client_id, "first_seen_at": now, "last_seen_at": now})

    def end(self, session_id: str, reason: str, actor_type: str = "system", actor_id: str | None = None) -> bool:
        """End a session and revoke every token issued through it. Returns False if it had already ended."""
        session = db.session.get(BrowserSession, session_id, with_for_update=True)
        if session is None or session.ended_at is not None:
            db.session.rollback()
            return False
        self._mark_ended(session, reason, utcnow())
        event = {"session_id": session_id, "user_id": session.user_id, "reason": reason, "actor_type": actor_type,
                 "actor_id": actor_id}
        session_ending.send(self, **event)
        db.session.commit()
        session_ended.send(self, **event)
        return True

    def _mark_ended(self, session: BrowserSession, reason: str, now: datetime) -> None:
        session.ended_at = now
        session.end_reason = reason
        _revoke_tokens_of([session.id], now)

    def end_all_for_user(self, user_id: str, reason: str, except_session_id: str | None = None,
                         actor_type: str = "system", actor_id: str | None = None) -> int:
        """End every open session of the user (but one, when given) in one transaction; returns how many ended.

        Set-based: one UPDATE … RETURNING claims the sessions (a concurrent `end` of one of them waits
        for the row lock and then finds it ended, so each session ends exactly once), a few statements
        revoke their tokens, and the logout outbox is filled for all of them at once. A user with a
        thousand sessions costs a handful of statements, not a transaction per session.
        """
        now = utcnow()
        claim = (
            update(BrowserSession)
            .where(BrowserSession.user_id == user_id, BrowserSession.ended_at.is_(None))
            .values(ended_at=now, end_reason=reason)
            .returning(BrowserSession.id)
        )
        if except_session_id is not None:
            claim = claim.where(BrowserSession.id != except_session_id)
        ids = list(db.session.scalars(claim))
        if not ids:
            # The caller's own unsaved work stays as it was: neither committed nor rolled back here.
            return 0
        _revoke_tokens_of(ids, now)
        common = {"user_id": user_id, "reason": reason, "actor_type": actor_type, "actor_id": actor_id}
        for session_id in ids:
            session_ending.send(self, session_id=session_id, batched=True, **common)
        sessions_ending.send(self, session_ids=ids, **common)
        db.session.commit()
        for session_id in ids:
            session_ended.send(self, session_id=session_id, batched=True, **common)
        sessions_ended.send(self, session_ids=ids, **common)
        return len(ids)

    def end_expired(self, limit: int = 200) -> int:
        """End sessions past their idle or absolute limit, so their apps hear of it without a visit."""
        now = utcnow()
        idle_before = now - timedelta(seconds=self._settings.session_idle_ttl)
        # One ordered query per limit, each an index range scan of its partial index of open sessions
        # (ix_sessions_open_idle, ix_sessions_open_expiry) that stops at once when nothing is due. With
        # both limits OR-ed, PostgreSQL guessed from all sessions (ended ones are mostly long idle) that
        # matches were plentiful and read the whole table every second (EXPLAIN in bench/scale.py).
        idle = (select(BrowserSession.id)
                .where(BrowserSession.ended_at.is_(None), BrowserSession.last_active_at <= idle_before)
                .order_by(BrowserSession.last_active_at).limit(limit))
        past = (select(BrowserSession.id)
                .where(BrowserSession.ended_at.is_(None), BrowserSession.expires_at <= now)
                .order_by(BrowserSession.expires_at).limit(limit))
        ids = list(dict.fromkeys([*db.session.scalars(idle), *db.session.scalars(past)]))[:limit]
        db.session.commit()
        return sum(self.end(session_id, "expired") for session_id in ids)

    def active_for_user(self, user_id: str) -> list[BrowserSession]:
        rows = db.session.scalars(
            select(BrowserSession)
            .where(BrowserSession.user_id == user_id, BrowserSession.ended_at.is_(None))
            .order_by(BrowserSession.last_active_at.desc())
        ).all()
        return [s for s in rows if not self.is_expired(s)]


def _revoke_tokens_of(session_ids: list[str], now: datetime) -> None:
    """Revoke every grant issued through these sessions (in the caller's transaction). Their access
    tokens die in the shared store, through the session_ending receivers of idp.services.grants."""
    for chunk in chunks(session_ids):
        db.session.execute(
            update(TokenFamily)
            .where(TokenFamily.session_id.in_(chunk), TokenFamily.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason="session_ended")
        )
