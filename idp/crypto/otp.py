"""One-time codes: TOTP (RFC 6238) and the random codes sent by email or SMS or kept for recovery."""

from __future__ import annotations

import hmac
import secrets
import time

import pyotp

TOTP_PERIOD = 30
TOTP_DIGITS = 6
# ±1 step tolerates a phone clock up to 30 s off (SPEC §6.1).
TOTP_DRIFT_STEPS = 1


def new_totp_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, as RFC 4226 §4 recommends


def totp_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD).provisioning_uri(name=account,
                                                                                        issuer_name=issuer)


def totp_matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step the code belongs to (within the drift window), or None."""
    if not isinstance(code, str) or len(code) != TOTP_DIGITS or not code.isdigit():
        return None
    now = time.time() if now is None else now
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)
    current = int(now // TOTP_PERIOD)
    matched = None
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        # Compare every candidate so timing does not reveal which step matched.
        if hmac.compare_digest(totp.generate_otp(step), code):
            matched = step
    return matched


def numeric_code(digits: int = 6) -> str:
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def recovery_code() -> str:
    """Ten lowercase letters and digits in two groups: about 52 bits, easy to type from paper."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def normalise_recovery_code(code: str) -> str:
    cleaned = "".join(c for c in (code or "").lower() if c.isalnum())
    return f"{cleaned[:5]}-{cleaned[5:]}" if len(cleaned) == 10 else cleaned
