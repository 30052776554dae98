"""Second-factor methods of the sign-in chain, each a small piece with the same shape."""

from __future__ import annotations

from typing import Protocol

from idp.login.flow import LoginFlow
from idp.services import services
from idp.storage.models import User


class SecondFactor(Protocol):
    name: str
    label: str
    # Proves possession of a device (NIST SP 800-63B): enough for the multi-factor level.
    possession: bool

    def prepare(self, flow: LoginFlow, user: User, ip: str | None) -> None: ...

    def verify(self, flow: LoginFlow, user: User, form) -> tuple[str, ...] | None:
        """The RFC 8176 `amr` values proven, or None when the proof is wrong."""


class AuthenticatorApp:
    name, label, possession = "totp", "Authenticator app", True

    def prepare(self, flow, user, ip):
        pass

    def verify(self, flow, user, form):
        return ("otp",) if services().factors.verify_totp(user, form.get("code", "")) else None


class _SentCode:
    channel = ""

    def prepare(self, flow, user, ip):
        # Sent once when the method is first shown; "Resend" asks explicitly (with a cooldown).
        if self.channel not in flow.codes_sent:
            services().factors.send_code(user, flow.id, self.channel)
            flow.codes_sent.append(self.channel)

    def verify(self, flow, user, form):
        return self.amr if services().factors.verify_code(user, flow.id, self.channel, form.get("code", "")) else None


class EmailCode(_SentCode):
    # An email code proves no device (NIST SP 800-63B §5.1.3.1): a second step, not a possession factor.
    name, label, amr, possession, channel = "email", "Email code", ("email",), False, "email"


class SmsCode(_SentCode):
    name, label, amr, possession, channel = "sms", "SMS code", ("sms",), True, "sms"


class RecoveryCodeFactor:
    # A look-up secret from a printed list: "something you have" (NIST SP 800-63B §5.1.2).
    name, label, possession = "recovery", "Recovery code", True

    def prepare(self, flow, user, ip):
        pass

    def verify(self, flow, user, form):
        return ("otp",) if services().factors.verify_recovery_code(user, form.get("code", "")) else None


class SecurityKey:
    name, label, possession = "webauthn", "Passkey or security key", True

    def prepare(self, flow, user, ip):
        pass

    def verify(self, flow, user, form):
        result = services().webauthn.verify_authentication(form.get("credential", ""), flow.id, user=user)
        if result is None:
            return None
        # A synced passkey lives in software key storage; a device-bound key in hardware.
        return ("swk",) if result.credential.backed_up else ("hwk",)


FACTORS: dict[str, SecondFactor] = {
    f.name: f for f in (SecurityKey(), AuthenticatorApp(), SmsCode(), EmailCode(), RecoveryCodeFactor())
}


def usable(methods: list[str], require_possession: bool) -> list[str]:
    """The methods that may finish this sign-in: only possession factors when the app asked for
    the multi-factor level (or a step-up)."""
    return [m for m in methods if FACTORS[m].possession] if require_possession else methods


def amr_after(flow: LoginFlow, factor: SecondFactor, proven: tuple[str, ...]) -> list[str]:
    amr = list(dict.fromkeys(flow.amr + list(proven)))
    if factor.possession and "pwd" in amr:
        amr.append("mfa")
    return amr
