"""Account lock after repeated wrong codes (SPEC §6.3): sessions end, the owner is emailed a
single-use unlock link; an administrator can unlock too."""

from __future__ import annotations

from idp.crypto.secrets import random_token, sha256_hex
from idp.extensions import db
from idp.storage.models import User, utcnow

UNLOCK_LINK_TTL = 24 * 3600


class Lockouts:
    def __init__(self, settings, store, sessions, notifier, audit):
        self._settings = settings
        self._store = store
        self._sessions = sessions
        self._notifier = notifier
        self._audit = audit

    def lock(self, user: User, ip: str | None, device: str | None) -> None:
        if user.locked_at is None:
            user.locked_at = utcnow()
            db.session.commit()
            self._audit.record("account_locked", user_id=user.id, actor_type="system", ip=ip,
                               user_agent=device, reason="wrong_codes")
        self._sessions.end_all_for_user(user.id, "account_locked")
        token = random_token(32)
        self._store.set(f"unlock:{sha256_hex(token)}", user.id, UNLOCK_LINK_TTL)
        # Sent after the answer; the lock holds either way, and an administrator can still unlock.
        self._send_unlock_link(user, token, ip, device)

    def _send_unlock_link(self, user: User, token: str, ip: str | None, device: str | None) -> None:
        self._notifier.email_notice(
            user.email,
            "account_locked",
            email=user.email,
            ip=ip,
            device=device,
            failures=self._settings.code_failures_per_account,
            unlock_url=f"{self._settings.issuer}/unlock/{token}",
        )

    def unlock_with_link(self, token: str) -> User | None:
        """Single use: the link is consumed whether or not the account is still locked."""
        if not token or len(token) > 100:
            return None
        user_id = self._store.take(f"unlock:{sha256_hex(token)}")
        user = db.session.get(User, user_id) if user_id else None
        if user is not None:
            self.unlock(user)
            self._audit.record("account_unlocked", user_id=user.id, by="email_link")
        return user

    def unlock(self, user: User) -> None:
        user.locked_at = None
        db.session.commit()
        self._store.delete(f"codefail:acct:{user.id}")
