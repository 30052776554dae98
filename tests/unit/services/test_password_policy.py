"""Password policy (SPEC §6.10; CONFORMANCE C01–C05, D05)."""

from __future__ import annotations

import pytest

from idp.services.password_policy import PasswordRejected, check
from idp.settings import load_settings


def settings(**overrides):
    return load_settings(environ={}, instance_dir="/tmp/idp-policy-test", secret_key="x", **overrides)


@pytest.mark.parametrize("password", [
    "correct horse battery staple",
    "a long and memorable passphrase",
    "violet tractor quantum marmalade 1987",
    "a long new passphrase 42",
    "quiet lanterns drift over copper hills",  # all lowercase: no composition rules (C05)
    "Grüße aus Köln, sagt der Bäcker 🥨",  # Unicode (C02)
    "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./ plus words like otter",  # all printable ASCII plus space (C02)
])
def test_strong_passwords_are_accepted(password):
    check(password, email="alice@example.com", name="Alice", settings=settings())


def test_64_and_128_characters_are_accepted():
    phrase = "tangerine submarine orchestra pebble lighthouse "
    check((phrase * 3)[:64], settings=settings())
    check((phrase * 3)[:128], settings=settings())


@pytest.mark.parametrize("password, reason", [
    ("password1", "at least 12 characters"),
    ("12345678", "at least 12 characters"),
    ("short pass", "at least 12 characters"),
    ("password1234", "too easy to guess"),
    ("qwertyuiop123", "too easy to guess"),
    ("aaaaaaaaaaaaaaaa", "too easy to guess"),
])
def test_short_or_common_passwords_are_refused_with_a_reason(password, reason):
    with pytest.raises(PasswordRejected) as refused:
        check(password, email="alice@example.com", settings=settings())
    assert reason in refused.value.public


def test_the_estimator_gives_its_feedback():
    with pytest.raises(PasswordRejected) as refused:
        check("password1234", settings=settings())
    # zxcvbn's warning, shown to the person
    assert "common" in refused.value.public.lower()


def test_the_email_and_its_local_part_are_refused():
    with pytest.raises(PasswordRejected, match="email address"):
        check("alice.wonderland@example.com", email="alice.wonderland@example.com", settings=settings())
    with pytest.raises(PasswordRejected, match="email address or user name"):
        check("my name is alicewonder and I sing", email="alicewonder@example.com", settings=settings())


def test_the_product_name_is_refused():
    with pytest.raises(PasswordRejected, match="name of this service"):
        check("my Acme Portal password rocks", settings=settings(product_name="Acme Portal"))
    with pytest.raises(PasswordRejected, match=r"name of this service \(idp\)"):
        check("glorious idp lantern pickle", settings=settings())


def test_the_persons_name_counts_against_the_score():
    check("bartholomew tennyson 1984", settings=settings())
    with pytest.raises(PasswordRejected):
        check("bartholomew tennyson 1984", name="Bartholomew Tennyson", settings=settings())


def test_minimum_length_is_a_setting():
    phrase = "quiet lanterns drift"  # 20 characters
    check(phrase, settings=settings(password_min_length=20))
    with pytest.raises(PasswordRejected, match="at least 21 characters"):
        check(phrase, settings=settings(password_min_length=21))


def test_composition_rules_are_off_by_default_and_configurable():
    phrase = "quiet lanterns drift over copper hills"
    check(phrase, settings=settings())
    strict = settings(password_require_upper=True, password_require_digit=True, password_require_symbol=True,
                      password_require_lower=True)
    with pytest.raises(PasswordRejected) as refused:
        check(phrase, settings=strict)
    assert refused.value.public == "The password must contain an uppercase letter, a digit and a symbol."
    check("Quiet lanterns drift over 7 copper hills!", settings=strict)


def test_bool_settings_come_from_the_environment():
    loaded = load_settings(environ={"IDP_PASSWORD_REQUIRE_DIGIT": "true"}, instance_dir="/tmp/idp-policy-test",
                           secret_key="x")
    assert loaded.password_require_digit is True and loaded.password_require_upper is False


def test_checked_as_typed_and_very_long_passwords_are_handled():
    long_phrase = "tangerine submarine orchestra pebble lighthouse " * 20  # ~1000 characters
    check(long_phrase[:1000], settings=settings())
    with pytest.raises(PasswordRejected, match="at most 1024"):
        check("x" * 1025, settings=settings())
    with pytest.raises(PasswordRejected):
        check(None, settings=settings())
