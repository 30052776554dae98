"""Authentication context class references advertised in discovery.

An email code is a second step for the product but proves no possession of a device
(NIST SP 800-63B §5.1.3.1), so it never earns the multi-factor value.
"""

from __future__ import annotations

# Password (or another single factor) only.
ACR_SINGLE_FACTOR = "urn:idp:acr:1fa"
# Password followed by an email code: two steps, still not a possession factor.
ACR_TWO_STEP = "urn:idp:acr:2step"
# Password plus a possession factor (TOTP, SMS, security key, passkey) or a
# user-verifying passkey alone: NIST AAL2.
ACR_MULTI_FACTOR = "urn:idp:acr:mfa"

ACR_VALUES_SUPPORTED = (ACR_SINGLE_FACTOR, ACR_TWO_STEP, ACR_MULTI_FACTOR)
_RANK = {ACR_SINGLE_FACTOR: 1, ACR_TWO_STEP: 2, ACR_MULTI_FACTOR: 3}

# RFC 8176 values that prove possession of a device.
POSSESSION_AMR = {"otp", "sms", "hwk", "swk"}


def acr_for_amr(amr) -> str:
    amr = set(amr)
    if "mfa" in amr or (amr & POSSESSION_AMR and ("pwd" in amr or "user" in amr)):
        return ACR_MULTI_FACTOR
    if "pwd" in amr and "email" in amr:
        return ACR_TWO_STEP
    return ACR_SINGLE_FACTOR


def acr_satisfies(actual: str, requested: str) -> bool:
    """True when the achieved level is at least the requested one."""
    if requested not in _RANK:
        return False
    return _RANK.get(actual, 0) >= _RANK[requested]
