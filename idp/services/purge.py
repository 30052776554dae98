"""Removing rows that can never be used again: expired codes and tokens, dead grants, long-ended
sessions, and back-channel logouts that are done.

Every table is emptied in batches, each its own short transaction: a sign-in never waits behind a
purge for more than one batch, and on PostgreSQL not even that, because a batch takes its rows with
FOR UPDATE SKIP LOCKED (a row a sign-in holds is simply left for the next run). Children go before
their parents, so the ON DELETE CASCADE behind each parent row finds little or nothing left to do.

What stays, and why (the retentions are settings, see idp/settings.py):
- a used authorization code until `purge_token_grace` after its expiry: a replay inside that window
  still finds the row and revokes the grant it issued (RFC 6749 §4.1.2);
- a used refresh token until its own expiry (plus the grace): a replay of a rotated token revokes
  its family (RFC 9700 §4.14.2), which a deleted row could not;
- an ended session for `ended_session_retention`: the audit trail names sessions by id, and the
  row (device, IP, user agent, why it ended) is what an investigation looks up;
- a session any grant still counts on is never removed (deleting it would set the grant's
  session_id to NULL and free it from the session's lifetime);
- a delivered or failed back-channel logout for `logout_outbox_retention`, so the admin outbox page
  shows what each app was told; pending rows stay until the worker is done with them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, delete, exists, func, literal_column, or_, select

from idp.extensions import db
from idp.storage.models import (
    AuthorizationCode,
    BrowserSession,
    LogoutDelivery,
    RefreshToken,
    TokenFamily,
    utcnow,
)

DEFAULT_BATCH_SIZE = 5000
MAX_BATCH_SIZE = 100_000


@dataclass
class PurgeResult:
    deleted: dict[str, int] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    # False when a time budget ran out first: the rest is left for the next run.
    complete: bool = True
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            ("would_delete" if self.dry_run else "deleted"): self.deleted,
            "total": sum(self.deleted.values()),
            "batches": self.batches,
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
        }


class Purger:
    def __init__(self, settings):
        self._settings = settings

    def plan(self, now=None) -> list[tuple[str, object, object]]:
        """(table name, model, condition) in the order they are emptied: children first."""
        now = now or utcnow()
        s = self._settings
        token_cutoff = now - timedelta(seconds=s.purge_token_grace)
        session_cutoff = now - timedelta(seconds=s.ended_session_retention)
        outbox_cutoff = now - timedelta(seconds=s.logout_outbox_retention)
        live_grant = exists().where(TokenFamily.session_id == BrowserSession.id, TokenFamily.revoked_at.is_(None))
        return [
            ("authorization_codes", AuthorizationCode, AuthorizationCode.expires_at < token_cutoff),
            ("refresh_tokens", RefreshToken, RefreshToken.expires_at < token_cutoff),
            ("token_families", TokenFamily,
             or_(TokenFamily.expires_at < token_cutoff, TokenFamily.revoked_at < token_cutoff)),
            ("sessions", BrowserSession, and_(BrowserSession.ended_at < session_cutoff, ~live_grant)),
            # A row that is done keeps the lease time of its last attempt in next_attempt_at: when it
            # was last worked on. The (status, next_attempt_at) index then serves this as a range scan.
            ("logout_deliveries", LogoutDelivery,
             and_(LogoutDelivery.status.in_(("delivered", "failed")), LogoutDelivery.next_attempt_at < outbox_cutoff)),
        ]

    def batch_statement(self, model, condition, batch_size: int):
        """DELETE of at most batch_size rows matching condition, skipping rows others hold on PostgreSQL."""
        if db.engine.dialect.name == "postgresql":
            # By physical row address: the plan is a TID scan of exactly the chosen rows. With the
            # primary key PostgreSQL chose a hash join over a scan of the whole table for some of them
            # (authorization_codes: 168 ms a batch on 500k rows, see bench/scale.py's EXPLAIN).
            key = literal_column("ctid")
            chosen = select(key).select_from(model).where(condition).limit(batch_size).with_for_update(
                skip_locked=True)
        else:
            [key] = model.__table__.primary_key.columns
            chosen = select(key).where(condition).limit(batch_size)
        return delete(model).where(key.in_(chosen)).execution_options(synchronize_session=False)

    def run(self, batch_size: int = DEFAULT_BATCH_SIZE, dry_run: bool = False,
            time_budget: float | None = None, now=None) -> PurgeResult:
        """Purge every table; with a time budget (seconds), stop between batches when it is spent."""
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
        started = time.monotonic()
        deadline = started + time_budget if time_budget is not None else None
        result = PurgeResult(dry_run=dry_run)
        # One cut-off for the whole run, so a long purge does not chase rows that expire while it works.
        for name, model, condition in self.plan(now):
            result.deleted[name] = result.batches[name] = 0
            if dry_run:
                result.deleted[name] = db.session.scalar(select(func.count()).select_from(model).where(condition))
                db.session.rollback()
                continue
            statement = self.batch_statement(model, condition, batch_size)
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    result.complete = False
                    break
                try:
                    deleted = db.session.execute(statement).rowcount
                    db.session.commit()
                except Exception:
                    db.session.rollback()
                    raise
                result.batches[name] += 1
                result.deleted[name] += deleted
                # A short batch means nothing is left but rows someone else holds: those wait for the next run.
                if deleted < batch_size:
                    break
            if not result.complete:
                break
        result.seconds = time.monotonic() - started
        return result


class PeriodicPurge:
    """Purge as a housekeeping task of the outbox worker: once per `purge_interval` across every
    process sharing the store (a lease in Redis decides which), in slices of `purge_slice_seconds` so
    back-channel deliveries in the same loop are never held up for long."""

    LEASE_KEY = "purge:lease"

    def __init__(self, settings, store, log):
        self._settings = settings
        self._store = store
        self._log = log
        self._purger = Purger(settings)
        self._next_due = 0.0
        self._running = False

    def __call__(self) -> None:
        interval = self._settings.purge_interval
        if interval <= 0 or (not self._running and time.monotonic() < self._next_due):
            return
        try:
            if not self._running:
                self._next_due = time.monotonic() + interval
                # Another process has this interval's purge; try again next interval.
                if not self._store.add(self.LEASE_KEY, "1", interval):
                    return
                self._running = True
            result = self._purger.run(time_budget=self._settings.purge_slice_seconds)
        except Exception:
            # Deliveries run after this task in the same pass: a failed purge must not stop them.
            db.session.rollback()
            self._running = False
            self._log.exception("periodic purge failed; it is tried again next interval")
            return
        if result.complete:
            self._running = False
        if result.deleted and sum(result.deleted.values()):
            self._log.info("purge removed %s", result.deleted)
