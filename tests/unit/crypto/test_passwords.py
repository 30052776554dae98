"""argon2id with the production parameters (the suite elsewhere uses cheaper ones for speed)."""

from __future__ import annotations

import threading

import pytest
from argon2 import PasswordHasher

from idp.crypto.passwords import Passwords, normalise_password
from idp.settings import Settings

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def production() -> Passwords:
    s = Settings()
    return Passwords(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism, s.password_hashes_at_once)


@pytest.fixture(scope="module")
def stored(production) -> str:
    return production.hash(PASSWORD)


def test_production_defaults_are_rfc_9106s_second_recommended_option():
    s = Settings()
    assert (s.argon2_memory_kib, s.argon2_time_cost, s.argon2_parallelism) == (64 * 1024, 3, 4)
    # Never below OWASP's minimum (m=19 MiB, t=2, p=1) in memory or in passes.
    assert s.argon2_memory_kib >= 19 * 1024 and s.argon2_time_cost >= 2


def test_hash_is_argon2id_with_the_production_parameters(stored):
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), stored


def test_a_hash_with_the_previous_defaults_is_upgraded(production):
    owasp_minimum = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash(PASSWORD)
    assert production.verify(owasp_minimum, PASSWORD) is True
    assert production.needs_rehash(owasp_minimum) is True


def test_hash_is_salted(production, stored):
    assert production.hash(PASSWORD) != stored


def test_right_password_verifies(production, stored):
    assert production.verify(stored, PASSWORD) is True


@pytest.mark.parametrize("attempt", ["", "correct horse battery stapl", "Correct horse battery staple",
                                     PASSWORD + " ", " " + PASSWORD])
def test_wrong_password_fails(production, stored, attempt):
    assert production.verify(stored, attempt) is False


def test_password_longer_than_72_characters_is_not_truncated(production):
    # CONFORMANCE C03: bcrypt silently ignores everything after 72 bytes; argon2 must not.
    long_password = "a long passphrase that keeps going past the bcrypt limit of seventy-two bytes!"
    assert len(long_password) > 72
    long_hash = production.hash(long_password)
    assert production.verify(long_hash, long_password) is True
    assert production.verify(long_hash, long_password[:72]) is False
    assert production.verify(long_hash, long_password[:-1]) is False
    assert production.verify(long_hash, long_password + "x") is False


def test_composed_and_decomposed_characters_are_the_same_password(production):
    composed = "caf\u00e9 au lait sans sucre"
    decomposed = "cafe\u0301 au lait sans sucre"
    assert composed != decomposed
    assert normalise_password(composed) == normalise_password(decomposed)
    assert production.verify(production.hash(composed), decomposed) is True
    assert production.verify(production.hash(decomposed), composed) is True


def test_nfkc_folds_compatibility_characters(production):
    # NFKC (not just NFC): the full-width letters an IME may type are the ASCII ones.
    assert production.verify(production.hash("Passphrase 12345"), "Ｐａｓｓｐｈｒａｓｅ　１２３４５") is True


@pytest.mark.parametrize("missing", [None, ""])
def test_unknown_account_never_verifies(production, missing):
    assert production.verify(missing, PASSWORD) is False
    # Not even the text of the timing-equaliser hash verified in its place.
    assert production.verify(missing, "timing-equaliser-not-a-password") is False


@pytest.mark.parametrize("garbage", ["not a hash", "$argon2id$v=19$m=19456,t=2,p=1$broken", "$2b$12$" + "x" * 53])
def test_malformed_stored_hash_fails_closed(production, garbage):
    assert production.verify(garbage, PASSWORD) is False


def test_needs_rehash_only_for_other_parameters(production, stored):
    assert production.needs_rehash(stored) is False
    weaker = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    assert production.needs_rehash(weaker) is True
    assert production.verify(weaker, PASSWORD) is True, "old hashes still sign in (then get rehashed)"
    assert production.needs_rehash("not a hash") is True


class _HeldHasher:
    """Stands in for argon2: each call waits at a gate, so the test sees how many run at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()

    def _hold(self):
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.entered.release()
        assert self.gate.wait(10)
        with self.lock:
            self.inside -= 1

    def verify(self, _hash, _password):
        self._hold()
        return True

    def hash(self, _password):
        self._hold()
        return "$argon2id$held"


@pytest.mark.parametrize("at_once", [1, 2])
def test_no_more_hashes_at_once_than_allowed(at_once):
    # Each hash holds argon2's whole memory while it runs; the bound is what keeps eight threads
    # signing in together from holding eight times 64 MiB.
    passwords = Passwords(1, 1024, 1, at_once)
    held = _HeldHasher()
    passwords._hasher = held
    results = []
    calls = [threading.Thread(target=lambda: results.append(passwords.verify("$argon2id$stored", PASSWORD)))
             for _ in range(3)] + [threading.Thread(target=lambda: results.append(passwords.hash(PASSWORD)))
                                   for _ in range(2)]
    for call in calls:
        call.start()
    for _ in range(at_once):
        assert held.entered.acquire(timeout=10)
    assert not held.entered.acquire(timeout=0.3), "a hash started while every slot was taken"
    held.gate.set()
    for call in calls:
        call.join(10)
    assert held.most_inside == at_once
    assert sorted(map(str, results)) == sorted(["True"] * 3 + ["$argon2id$held"] * 2)


def test_a_prepared_equaliser_makes_unknown_accounts_cost_one_hash_from_the_first():
    # Made at first need, the first unknown account a process checked would take two hashes (make
    # the equaliser, then verify against it): once per worker, an unknown address would stand out.
    passwords = Passwords(1, 1024, 1, 1)
    calls = []
    real = passwords._hasher

    class Counting:
        def hash(self, password):
            calls.append("hash")
            return real.hash(password)

        def verify(self, stored, password):
            calls.append("verify")
            return real.verify(stored, password)

    passwords._hasher = Counting()
    passwords.prepare_timing_equaliser()
    calls.clear()
    assert passwords.verify(None, PASSWORD) is False
    assert calls == ["verify"]
