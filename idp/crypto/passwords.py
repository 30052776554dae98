"""argon2id password hashing with deliberate parameters and rehash on sign-in."""

from __future__ import annotations

import threading
import unicodedata

from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from idp.crypto.argon2_memory import MemoryReusingHasher, shared_working_memory


def normalise_password(password: str) -> str:
    # NIST SP 800-63B §5.1.1.2: apply NFKC so a composed and a decomposed "é" are the same password.
    return unicodedata.normalize("NFKC", password)


class Passwords:
    def __init__(self, time_cost: int, memory_kib: int, parallelism: int, at_once: int):
        self._hasher = MemoryReusingHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
                                           memory=shared_working_memory())
        # Each hash holds memory_kib of memory while it runs. Beyond a few at once a process gains no
        # speed (the hashes running share the CPUs between them) but can run out of memory:
        # eight gunicorn threads signing in together would otherwise hold 512 MiB with the defaults.
        self._slots = threading.BoundedSemaphore(at_once)
        self._dummy_hash: str | None = None

    def hash(self, password: str) -> str:
        normalised = normalise_password(password)
        with self._slots:
            return self._hasher.hash(normalised)

    def verify(self, password_hash: str | None, password: str) -> bool:
        normalised = normalise_password(password)
        # Unknown accounts are checked against a hash with the same parameters, so they take as long.
        against = password_hash or self._timing_equaliser()
        try:
            with self._slots:
                matches = self._hasher.verify(against, normalised)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return matches and bool(password_hash)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def prepare_timing_equaliser(self) -> None:
        """`idp serve` calls this before its workers start; every other command builds the services
        without needing it, and one hash with the production parameters costs a tenth of a second."""
        self._timing_equaliser()

    def _timing_equaliser(self) -> str:
        # Two threads racing here both make one; either serves.
        if self._dummy_hash is None:
            self._dummy_hash = self.hash("timing-equaliser-not-a-password")
        return self._dummy_hash
