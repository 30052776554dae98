"""Second factors: authenticator apps (TOTP), email and SMS codes, recovery codes.

Every check here answers only True or False; counting failures and locking are the caller's
(the login chain), so that every factor is limited the same way.
"""

from __future__ import annotations

import json

from sqlalchemy import bindparam, delete, func, select, update

from idp.crypto.otp import (
    new_totp_secret,
    normalise_recovery_code,
    numeric_code,
    recovery_code,
    totp_matching_step,
    totp_uri,
)
from idp.crypto.sealing import Sealer
from idp.crypto.secrets import constant_time_equal, keyed_hash, random_token
from idp.domain.errors import DomainError, ServiceUnavailable, Throttled
from idp.extensions import db
from idp.storage.models import RecoveryCode, TotpCredential, User, WebAuthnCredential, utcnow
from idp.storage.rows import execute_core

RECOVERY_CODE_COUNT = 10


class Factors:
    def __init__(self, settings, store, notifier):
        self._settings = settings
        self._store = store
        self._notifier = notifier
        self._sealer = Sealer(settings.secret_key, "totp-secret")

    # -- what a user has -----------------------------------------------------------------

    def methods(self, user: User) -> list[str]:
        """Second-factor methods the user can use now, strongest first."""
        # One round trip for the three counts: every step of a sign-in asks this.
        return self._methods(user, *execute_core(_FACTOR_COUNTS, {"user_id": user.id}).one())

    def user_and_methods(self, user_id: str) -> tuple[User | None, list[str]]:
        """The user and `methods(user)` in one round trip: each second-factor step needs both."""
        row = db.session.execute(_USER_WITH_FACTOR_COUNTS, {"user_id": user_id}).one_or_none()
        if row is None:
            return None, []
        user, *counts = row
        return user, self._methods(user, *counts)

    @staticmethod
    def _methods(user: User, webauthn: int, totp: int, recovery: int) -> list[str]:
        methods = []
        if webauthn:
            methods.append("webauthn")
        if totp:
            methods.append("totp")
        if user.sms_otp_enabled and user.phone and user.phone_verified:
            methods.append("sms")
        if user.email_otp_enabled and user.email_verified:
            methods.append("email")
        if methods and recovery:
            methods.append("recovery")
        return methods

    def has_second_factor(self, user: User) -> bool:
        return bool(self.methods(user))


    # -- TOTP ----------------------------------------------------------------------------

    def begin_totp_enrolment(self, user: User) -> tuple[str, str, str]:
        """A new secret, kept in the store until a code confirms it. Returns (enrolment id, secret, otpauth URI)."""
        secret = new_totp_secret()
        enrolment_id = random_token(16)
        self._store.set(f"totp-enrol:{user.id}:{enrolment_id}", self._sealer.seal(secret), 15 * 60)
        return enrolment_id, secret, totp_uri(secret, user.email, self._settings.product_name)

    def pending_totp_secret(self, user: User, enrolment_id: str) -> str | None:
        sealed = self._store.get(f"totp-enrol:{user.id}:{enrolment_id}") if enrolment_id else None
        return self._sealer.open(sealed) if sealed else None

    def confirm_totp_enrolment(self, user: User, enrolment_id: str, code: str, name: str | None = None) -> bool:
        secret = self.pending_totp_secret(user, enrolment_id)
        if secret is None:
            raise DomainError("The set-up expired. Start again to get a new key.")
        step = totp_matching_step(secret, code)
        if step is None:
            return False
        self._store.delete(f"totp-enrol:{user.id}:{enrolment_id}")
        db.session.add(TotpCredential(user_id=user.id, sealed_secret=self._sealer.seal(secret),
                                      name=(name or "Authenticator app")[:100], last_used_step=step))
        db.session.commit()
        return True

    def verify_totp(self, user: User, code: str, now: float | None = None) -> bool:
        """A code is accepted once: the step must be newer than the last accepted one (atomic update)."""
        code = (code or "").replace(" ", "")
        for credential_id, sealed_secret in execute_core(_TOTP_SECRETS, {"user_id": user.id}).all():
            step = totp_matching_step(self._sealer.open(sealed_secret), code, now)
            if step is None:
                continue
            claimed = execute_core(_CLAIM_TOTP_STEP, {"credential": credential_id, "step": step,
                                                      "claimed_at": utcnow()}).rowcount
            db.session.commit()
            return bool(claimed)
        return False

    def remove_totp(self, user: User, credential_id: str) -> bool:
        removed = db.session.execute(
            delete(TotpCredential).where(TotpCredential.id == credential_id, TotpCredential.user_id == user.id)
        ).rowcount
        db.session.commit()
        return bool(removed)

    def totp_credentials(self, user: User) -> list[TotpCredential]:
        return list(db.session.scalars(select(TotpCredential).where(TotpCredential.user_id == user.id)))

    # -- email and SMS codes -------------------------------------------------------------

    def _otp_key(self, flow_id: str, channel: str) -> str:
        return f"oob:{channel}:{flow_id}"

    def send_code(self, user: User, flow_id: str, channel: str, purpose: str = "sign-in") -> None:
        """Send a fresh 6-digit code bound to this flow; a resend replaces the old code after a cooldown."""
        cooldown_key = f"oob-cooldown:{channel}:{flow_id}"
        if not self._store.add(cooldown_key, "1", self._settings.otp_resend_cooldown):
            wait = self._store.ttl(cooldown_key) or self._settings.otp_resend_cooldown
            raise Throttled(f"A code was just sent. You can ask for another in {wait} seconds.", retry_after=wait)
        code = numeric_code(6)
        record = {"hash": keyed_hash(self._settings.secret_key, f"{flow_id}:{code}"), "user": user.id}
        minutes = max(1, self._settings.otp_code_ttl // 60)
        try:
            if channel == "email":
                self._notifier.email(user.email, "sign_in_code", code=code, purpose=purpose, minutes=minutes,
                                     seconds=self._settings.otp_code_ttl)
            else:
                self._notifier.sms(user.phone, f"{code} is your {self._settings.product_name} {purpose} code. "
                                               f"It expires in {minutes} minute(s). Never share it.")
        except ServiceUnavailable:
            # Nothing went out: no cooldown holds the person back, and the code they have stays valid.
            self._store.delete(cooldown_key)
            raise
        self._store.set(self._otp_key(flow_id, channel), json.dumps(record), self._settings.otp_code_ttl)

    def verify_code(self, user: User, flow_id: str, channel: str, code: str) -> bool:
        """Single use: a correct code is consumed; a wrong one leaves it for the next try (limits apply)."""
        code = (code or "").strip()
        key = self._otp_key(flow_id, channel)
        raw = self._store.get(key)
        if raw is None or not code.isdigit() or len(code) != 6:
            return False
        record = json.loads(raw)
        expected = keyed_hash(self._settings.secret_key, f"{flow_id}:{code}")
        if record.get("user") != user.id or not constant_time_equal(record["hash"], expected):
            return False
        # Consume atomically: of two concurrent correct submissions only one wins.
        return self._store.take(key) is not None

    # -- recovery codes --------------------------------------------------------------------

    def _recovery_hash(self, code: str) -> str:
        return keyed_hash(self._settings.secret_key, "recovery:" + normalise_recovery_code(code))

    def regenerate_recovery_codes(self, user: User) -> list[str]:
        """Ten new codes, shown once; the old set stops working."""
        db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        codes = [recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        for code in codes:
            db.session.add(RecoveryCode(code_hash=self._recovery_hash(code), user_id=user.id))
        db.session.commit()
        return codes

    def recovery_codes_left(self, user_id: str) -> int:
        return db.session.scalar(select(func.count()).select_from(RecoveryCode).where(
            RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))) or 0

    def verify_recovery_code(self, user: User, code: str) -> bool:
        used = db.session.execute(
            update(RecoveryCode)
            .where(RecoveryCode.code_hash == self._recovery_hash(code or ""), RecoveryCode.user_id == user.id,
                   RecoveryCode.used_at.is_(None))
            .values(used_at=utcnow())
        ).rowcount
        db.session.commit()
        return bool(used)

    def reset_all(self, user: User) -> None:
        """Remove every second factor (admin 2FA reset); trusted devices go with them (caller)."""
        for model in (TotpCredential, WebAuthnCredential, RecoveryCode):
            db.session.execute(delete(model).where(model.user_id == user.id))
        user.email_otp_enabled = False
        user.sms_otp_enabled = False
        db.session.commit()


def _count_of(model, *conditions):
    return select(func.count()).select_from(model).where(*conditions).scalar_subquery()


# Built once: building these statements and their cache keys took longer than running them.
_COUNTS = (
    _count_of(WebAuthnCredential, WebAuthnCredential.user_id == bindparam("user_id")),
    _count_of(TotpCredential, TotpCredential.user_id == bindparam("user_id")),
    _count_of(RecoveryCode, RecoveryCode.user_id == bindparam("user_id"), RecoveryCode.used_at.is_(None)),
)
_FACTOR_COUNTS = select(*_COUNTS)
_USER_WITH_FACTOR_COUNTS = select(User, *_COUNTS).where(User.id == bindparam("user_id"))

# A TOTP check's two statements, built once for the same reason; the step is claimed with a plain
# UPDATE on the table (no ORM object of the row is kept to synchronise).
_TOTP_SECRETS = select(TotpCredential.id, TotpCredential.sealed_secret).where(
    TotpCredential.user_id == bindparam("user_id"))
_TOTPS = TotpCredential.__table__
_CLAIM_TOTP_STEP = (
    _TOTPS.update()
    .where(_TOTPS.c.id == bindparam("credential"), _TOTPS.c.last_used_step < bindparam("step"))
    .values(last_used_step=bindparam("step"), last_used_at=bindparam("claimed_at"))
)
