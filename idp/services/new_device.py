"""A sign-in from a browser this person has not used before is announced by email (SPEC §6.5),
with a single-use link that ends that very session."""

from __future__ import annotations

from idp.crypto.secrets import constant_time_equal, keyed_hash, random_token, sha256_hex
from idp.services.user_agents import describe_user_agent

END_LINK_TTL = 7 * 24 * 3600


class NewDeviceNotices:
    def __init__(self, settings, store, notifier):
        self._settings = settings
        self._store = store
        self._notifier = notifier

    def browser_mark(self, user_id: str) -> str:
        """The value a browser keeps once this person has signed in on it: keyed, so it cannot be forged."""
        return keyed_hash(self._settings.secret_key, "known-browser:" + user_id)[:43]

    def is_known(self, user_id: str, mark: str | None) -> bool:
        return bool(mark) and constant_time_equal(mark, self.browser_mark(user_id))

    def announce(self, user, session, ip: str | None, user_agent: str | None) -> None:
        token = random_token(32)
        self._store.set(f"end-session:{sha256_hex(token)}", session.id, END_LINK_TTL)
        device = describe_user_agent(user_agent)
        described = " · ".join(p for p in (device["model"], device["os"], device["browser"]) if p) or "Unknown device"
        # Sent after the answer: the sign-in stands whatever the mail server does, and the session
        # shows on /account/sessions either way.
        self._notifier.email_notice(user.email, "new_device_sign_in", device=described, ip=ip or "unknown",
                                    end_url=f"{self._settings.issuer}/account/sessions/end-link/{token}")

    def session_for_link(self, token: str, consume: bool) -> str | None:
        if not token or len(token) > 100:
            return None
        key = f"end-session:{sha256_hex(token)}"
        return self._store.take(key) if consume else self._store.get(key)
