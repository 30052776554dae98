"""Second-factor attempt limits (SPEC §6.3), counted in the shared store so they hold on every
instance. Store failures propagate as ServiceUnavailable: a code check fails closed."""

from __future__ import annotations

from dataclasses import dataclass

from idp.domain.errors import Throttled


def minutes(seconds: int) -> str:
    count = max(1, (int(seconds) + 59) // 60)
    return f"{count} minute" if count == 1 else f"{count} minutes"


@dataclass(frozen=True)
class FailureOutcome:
    ip_blocked: bool
    account_locked: bool


class CodeAttemptLimits:
    def __init__(self, settings, store):
        self._settings = settings
        self._store = store

    @staticmethod
    def _ip_key(ip: str | None) -> str:
        return f"codefail:ip:{ip or '-'}"

    @staticmethod
    def _block_key(ip: str | None) -> str:
        return f"codeblock:ip:{ip or '-'}"

    @staticmethod
    def _account_key(user_id: str) -> str:
        return f"codefail:acct:{user_id}"

    def check_ip(self, ip: str | None) -> None:
        wait = self._store.ttl(self._block_key(ip))
        if wait:
            raise Throttled(
                f"Too many wrong codes from your network. Try again in {minutes(wait)}.",
                retry_after=wait,
            )

    def record_failure(self, user_id: str, ip: str | None) -> FailureOutcome:
        s = self._settings
        ip_failures = self._store.incr(self._ip_key(ip), s.code_ip_block_seconds)
        blocked = ip_failures >= s.code_failures_per_ip
        if blocked:
            self._store.set(self._block_key(ip), "1", s.code_ip_block_seconds)
            self._store.delete(self._ip_key(ip))
        # Consecutive failures for the account from any address; reset by a correct code.
        account_failures = self._store.incr(self._account_key(user_id), 24 * 3600)
        locked = account_failures >= s.code_failures_per_account
        if locked:
            self._store.delete(self._account_key(user_id))
        return FailureOutcome(ip_blocked=blocked, account_locked=locked)

    def record_success(self, user_id: str, ip: str | None) -> None:
        # Only the account's run of failures ends: a correct code for one's own account must not
        # wipe the address's count, or an attacker could interleave them to dodge the IP block.
        self._store.delete(self._account_key(user_id))
