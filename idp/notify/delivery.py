"""Delivers back-channel logout tokens from the durable outbox (table logout_deliveries).

Rows are claimed with a short lease (a conditional UPDATE that only one process can win), so any
number of web processes and `idp worker` instances drain the same outbox without sending a token
twice; a crash between claim and result leaves the row to be retried after the lease.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import timedelta

import requests
from sqlalchemy import select, update

from idp.extensions import db
from idp.storage.models import LogoutDelivery, utcnow

log = logging.getLogger("idp.backchannel")

LEASE_SECONDS = 30
REQUEST_TIMEOUT = 5
MAX_BACKOFF_SECONDS = 300
RETRYABLE_CLIENT_ERRORS = {408, 425, 429}
# Retries for a day: an app that is down for minutes (or hours) still hears of the logout.
GIVE_UP_AFTER = timedelta(hours=24)


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with jitter: 1, 2, 4 … seconds, at most five minutes."""
    base = min(2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)
    return base * random.uniform(0.8, 1.2)


class LogoutDeliverer:
    def __init__(self, http: requests.Session | None = None):
        self.http = http or requests.Session()

    def _claim(self, row_id: str, seen_next_attempt) -> LogoutDelivery | None:
        now = utcnow()
        claimed = db.session.execute(
            update(LogoutDelivery)
            .where(LogoutDelivery.id == row_id, LogoutDelivery.status == "pending",
                   LogoutDelivery.next_attempt_at == seen_next_attempt)
            .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
        ).rowcount
        db.session.commit()
        return db.session.get(LogoutDelivery, row_id) if claimed else None

    def deliver_ids(self, row_ids: list[str]) -> int:
        """Deliver specific rows now (right after a session ended), if nobody else has them."""
        sent = 0
        for row_id in row_ids:
            row = db.session.get(LogoutDelivery, row_id)
            if row is not None and row.status == "pending" and row.next_attempt_at <= utcnow():
                claimed = self._claim(row.id, row.next_attempt_at)
                sent += bool(claimed and self._attempt(claimed))
        return sent

    def deliver_due(self, limit: int = 50) -> int:
        due = db.session.execute(
            select(LogoutDelivery.id, LogoutDelivery.next_attempt_at)
            .where(LogoutDelivery.status == "pending", LogoutDelivery.next_attempt_at <= utcnow())
            .order_by(LogoutDelivery.next_attempt_at)
            .limit(limit)
        ).all()
        db.session.commit()
        sent = 0
        for row_id, next_attempt in due:
            claimed = self._claim(row_id, next_attempt)
            sent += bool(claimed and self._attempt(claimed))
        return sent

    def _attempt(self, row: LogoutDelivery) -> bool:
        error, final = None, False
        try:
            # OIDC Back-Channel Logout §2.5: form-encoded, only the logout_token; no redirects followed.
            response = self.http.post(row.target_url, data={"logout_token": row.logout_token},
                                      timeout=REQUEST_TIMEOUT, allow_redirects=False)
            if 200 <= response.status_code < 300:
                row.status = "delivered"
                row.delivered_at = utcnow()
                row.attempts += 1
                row.last_error = None
                db.session.commit()
                return True
            error = f"HTTP {response.status_code}"
            # The app read the token and refused it (e.g. a jti it already has): sending it again
            # cannot change the answer. Timeouts and throttling are worth another try.
            final = 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_CLIENT_ERRORS
        except requests.RequestException as exc:
            error = type(exc).__name__
        row.attempts += 1
        row.last_error = error
        if final or utcnow() - row.created_at >= GIVE_UP_AFTER:
            row.status = "failed"
        else:
            row.next_attempt_at = utcnow() + timedelta(seconds=backoff_seconds(row.attempts))
        db.session.commit()
        log.info("back-channel logout to %s failed (%s), attempt %d", row.client_id, error, row.attempts)
        return False


class BackgroundWorker:
    """Drains the outbox in a thread of this process: the embedded default needs no second command."""

    def __init__(self, app, interval: float = 1.0, housekeeping=()):
        self.app = app
        self.interval = interval
        # Callables run in each pass inside the app context, e.g. ending expired sessions.
        self.housekeeping = list(housekeeping)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idp-outbox", daemon=True)

    def start(self) -> BackgroundWorker:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        deliverer = LogoutDeliverer()
        while not self._stop.is_set():
            try:
                with self.app.app_context():
                    for task in self.housekeeping:
                        task()
                    while not self._stop.is_set() and deliverer.deliver_due():
                        pass
                    db.session.remove()
            except Exception:  # keep draining after a database hiccup; the rows stay in the outbox
                log.exception("outbox worker pass failed")
                time.sleep(self.interval)
            self._wake.wait(self.interval)
            self._wake.clear()
