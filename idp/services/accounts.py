"""Accounts: creation, lookup, and password sign-in with throttling that holds across instances."""

from __future__ import annotations

import re
from types import SimpleNamespace

from flask import current_app, has_app_context
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from idp.domain.errors import Conflict, DomainError, Throttled
from idp.extensions import db
from idp.services import password_policy
from idp.storage.models import User, utcnow
from idp.storage.rows import alone, row_by_id

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$|^[^@\s]{1,64}@localhost$")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
MIN_PASSWORD_LENGTH = 12  # the default of settings.password_min_length
MAX_PASSWORD_LENGTH = password_policy.MAX_PASSWORD_LENGTH

GENERIC_SIGN_IN_FAILURE = "Incorrect email or password."

# Built once: composing the statement on each UserInfo request cost as much as running it.
_PROFILE = select(User.id, User.name, User.email, User.email_verified, User.phone, User.phone_verified,
                  User.updated_at, User.disabled_at, User.locked_at).where(User.id == bindparam("user_id"))
_USER_BY_EMAIL = select(User).where(User.email == bindparam("email"))


def normalise_email(email: str) -> str:
    """One account per mailbox: trim and lowercase (the domain is case-insensitive, and in practice so is the local part)."""
    return (email or "").strip().lower()


def validate_email(email: str) -> str:
    email = normalise_email(email)
    if len(email) > 320 or not _EMAIL.match(email):
        raise DomainError("Enter a valid email address.")
    return email


def validate_phone(phone: str | None) -> str | None:
    if phone in (None, ""):
        return None
    phone = phone.strip().replace(" ", "")
    if not _PHONE.match(phone):
        raise DomainError("Enter the phone number in international format, e.g. +14155550123.")
    return phone


def check_password_policy(password: str, email: str | None = None, name: str | None = None) -> None:
    """The password policy (idp.services.password_policy) with this app's settings; raises DomainError."""
    settings = current_app.extensions["idp"].settings if has_app_context() and "idp" in current_app.extensions else None
    password_policy.check(password, email=email, name=name, settings=settings)


class Accounts:
    def __init__(self, settings, store, passwords):
        self._settings = settings
        self._store = store
        self._passwords = passwords

    def create_user(
        self,
        email: str,
        password: str | None,
        name: str | None = None,
        phone: str | None = None,
        is_admin: bool = False,
        email_verified: bool = True,
        password_hash: str | None = None,
    ) -> User:
        """`password_hash` instead of `password`: a hash made earlier (sign-up keeps no plain password)."""
        email = validate_email(email)
        phone = validate_phone(phone)
        if password is not None:
            check_password_policy(password, email, name)
            password_hash = self._passwords.hash(password)
        user = User(
            email=email,
            name=(name or "").strip() or None,
            phone=phone,
            phone_verified=bool(phone),
            email_verified=email_verified,
            is_admin=is_admin,
            password_hash=password_hash,
            password_changed_at=utcnow() if password_hash is not None else None,
        )
        db.session.add(user)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise Conflict("An account with this email or phone already exists.") from None
        return user

    def get(self, user_id: str) -> User | None:
        return row_by_id(User, user_id)

    def profile(self, user_id: str):
        """The columns UserInfo answers from and `can_sign_in` checks, as a row."""
        row = alone(_PROFILE, {"user_id": user_id})[1]
        return SimpleNamespace(**row) if row is not None else None

    def find_by_email(self, email: str) -> User | None:
        return db.session.execute(_USER_BY_EMAIL, {"email": normalise_email(email)}).scalar_one_or_none()

    def can_sign_in(self, user: User | None) -> bool:
        return user is not None and user.disabled_at is None and user.locked_at is None

    def save(self, user: User) -> None:
        db.session.commit()

    def change_password(self, user: User, current: str, new: str, confirm: str) -> None:
        """ASVS 6.2.3: the current password is required; the caller ends other sessions and trust."""
        if not self._passwords.verify(user.password_hash, current or ""):
            raise DomainError("Your current password is not right.")
        if new != confirm:
            raise DomainError("The new passwords do not match.")
        check_password_policy(new, user.email, user.name)
        user.password_hash = self._passwords.hash(new)
        user.password_changed_at = utcnow()
        db.session.commit()

    def set_password(self, user: User, new: str) -> None:
        """A new password without the current one (password reset, after the emailed codes); the
        caller ends sessions and trust. Clears the sign-in throttle: the owner proved the mailbox."""
        check_password_policy(new, user.email, user.name)
        user.password_hash = self._passwords.hash(new)
        user.password_changed_at = utcnow()
        db.session.commit()
        self._store.delete(self._throttle_keys(user.email, None)[0])

    # -- password sign-in ---------------------------------------------------------------

    def _throttle_keys(self, email: str, ip: str | None) -> tuple[str, str]:
        return f"pwfail:acct:{normalise_email(email)}", f"pwfail:ip:{ip or '-'}"

    def check_password_throttle(self, email: str, ip: str | None) -> bool:
        """Raise Throttled when the account or the address has failed too often; otherwise say
        whether the account has failures on record (both counters are read in one round trip)."""
        s = self._settings
        account_key, ip_key = self._throttle_keys(email, ip)
        counts = self._store.get_many(account_key, ip_key)
        for key, count, limit in zip((account_key, ip_key), counts,
                                     (s.password_failures_per_account, s.password_failures_per_ip)):
            if count is not None and int(count) >= limit:
                wait = self._store.ttl(key) or s.password_failure_window
                raise Throttled(
                    f"Too many failed sign-in attempts. Try again in {max(1, (wait + 59) // 60)} minute(s).",
                    retry_after=wait,
                )
        return counts[0] is not None

    def authenticate_password(self, email: str, password: str, ip: str | None) -> User:
        """Return the user, or raise with one message whatever went wrong (no account enumeration)."""
        account_failures = self.check_password_throttle(email, ip)
        user = self.find_by_email(email) if email else None
        # Unknown accounts still pay for one hash verification so timing tells nothing.
        valid = self._passwords.verify(user.password_hash if user else None, password or "")
        if not valid or not self.can_sign_in(user):
            self._record_password_failure(email, ip)
            raise DomainError(GENERIC_SIGN_IN_FAILURE)
        if account_failures:
            # The right password ends the account's run of failures (none on record: nothing to end;
            # one recorded meanwhile by another attempt stays, the safe way round).
            self._store.delete(self._throttle_keys(email, ip)[0])
        if self._passwords.needs_rehash(user.password_hash):
            user.password_hash = self._passwords.hash(password)
            db.session.commit()
        return user

    def _record_password_failure(self, email: str, ip: str | None) -> None:
        window = self._settings.password_failure_window
        for key in self._throttle_keys(email, ip):
            self._store.incr(key, window)
