"""argon2id password hashing with deliberate parameters and rehash on sign-in."""

from __future__ import annotations

import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


def normalise_password(password: str) -> str:
    # NIST SP 800-63B §5.1.1.2: apply NFKC so a composed and a decomposed "é" are the same password.
    return unicodedata.normalize("NFKC", password)


class Passwords:
    def __init__(self, time_cost: int, memory_kib: int, parallelism: int):
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        # Verified against for unknown accounts so they take as long as known ones.
        self._dummy_hash = self._hasher.hash("timing-equaliser-not-a-password")

    def hash(self, password: str) -> str:
        return self._hasher.hash(normalise_password(password))

    def verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, normalise_password(password)) and bool(
                password_hash
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
