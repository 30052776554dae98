"""argon2id with the production parameters (the suite elsewhere uses cheaper ones for speed)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from idp.crypto.passwords import Passwords, normalise_password
from idp.settings import Settings

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def production() -> Passwords:
    s = Settings()
    return Passwords(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)


@pytest.fixture(scope="module")
def stored(production) -> str:
    return production.hash(PASSWORD)


def test_production_defaults_are_the_owasp_argon2id_minimum():
    s = Settings()
    assert (s.argon2_memory_kib, s.argon2_time_cost, s.argon2_parallelism) == (19 * 1024, 2, 1)


def test_hash_is_argon2id_with_the_production_parameters(stored):
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), stored


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
