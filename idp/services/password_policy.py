"""Password policy (SPEC §6.10, CONFORMANCE C01–C05, D05): length, a strength estimator, the
product name and the person's own address, and composition rules only when a deployment asks.

zxcvbn's bundled frequency lists (common passwords, English words, names, surnames, TV and film
words) are the shipped common-password list: a password made mostly of those scores low.
Passwords are checked as typed: no trimming, no case-folding, no truncation.
"""

from __future__ import annotations

import string

from zxcvbn import zxcvbn

from idp.domain.errors import DomainError

MAX_PASSWORD_LENGTH = 1024
# zxcvbn's running time grows quickly with length; the first characters decide the score anyway
# (a long password whose first 100 characters are strong is strong).
_ESTIMATE_PREFIX = 100
MIN_SCORE = 3


class PasswordRejected(DomainError):
    """The password breaks the policy; `public` is the reason shown to the person."""


def _setting(settings, name: str, default):
    return getattr(settings, name, default) if settings is not None else default


def check(password, *, email: str | None = None, name: str | None = None, settings=None) -> None:
    """Raise PasswordRejected with the reason, or return when the password may be used."""
    min_length = _setting(settings, "password_min_length", 12)
    product = _setting(settings, "product_name", "idp") or ""
    if not isinstance(password, str) or len(password) < min_length:
        raise PasswordRejected(f"Use at least {min_length} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"Use at most {MAX_PASSWORD_LENGTH} characters.")
    lowered = password.lower()
    local_part = (email or "").split("@")[0].lower()
    if email and lowered.strip() == email.lower():
        raise PasswordRejected("The password must not be your email address.")
    if local_part and len(local_part) >= 3 and local_part in lowered:
        raise PasswordRejected("The password must not contain your email address or user name.")
    if product and len(product) >= 3 and product.lower() in lowered:
        raise PasswordRejected(f"The password must not contain the name of this service ({product}).")
    _check_composition(password, settings)
    user_inputs = [value for value in (email, local_part, name, product) if value]
    user_inputs += (name or "").split()
    result = zxcvbn(password[:_ESTIMATE_PREFIX], user_inputs=user_inputs, max_length=_ESTIMATE_PREFIX)
    if result["score"] < MIN_SCORE:
        feedback = result.get("feedback") or {}
        parts = ["This password is too easy to guess."]
        if feedback.get("warning"):
            parts.append(_sentence(feedback["warning"]))
        parts.extend(_sentence(s) for s in feedback.get("suggestions") or [])
        if len(parts) == 1:
            parts.append("Use a longer phrase of several uncommon words.")
        raise PasswordRejected(" ".join(parts))


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _check_composition(password: str, settings) -> None:
    rules = (
        ("password_require_lower", lambda p: any(c.islower() for c in p), "a lowercase letter"),
        ("password_require_upper", lambda p: any(c.isupper() for c in p), "an uppercase letter"),
        ("password_require_digit", lambda p: any(c.isdigit() for c in p), "a digit"),
        ("password_require_symbol",
         lambda p: any(not c.isalnum() and not c.isspace() or c in string.punctuation for c in p), "a symbol"),
    )
    missing = [label for setting, holds, label in rules if _setting(settings, setting, False) and not holds(password)]
    if missing:
        listed = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
        raise PasswordRejected(f"The password must contain {listed}.")
