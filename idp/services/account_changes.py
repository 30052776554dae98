"""Sensitive account changes done one at a time (SPEC §6.9): email and phone changes confirmed by a
code sent to the new address or number, and account deletion (SPEC §6.10).

A change in progress is kept in the shared store under the user's id with a time limit, so a second
one is refused on every instance until the first is finished, cancelled or has run out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from idp.crypto.secrets import keyed_hash, random_token
from idp.domain.errors import Conflict, DomainError
from idp.extensions import db
from idp.services import services
from idp.storage.models import User

PENDING_TTL = 15 * 60
ONE_AT_A_TIME = ("Another change to your account is in progress. Finish or cancel it first, "
                 "or wait 15 minutes for it to run out.")
EMAIL_TAKEN = "That email address cannot be used. Choose another one."
PHONE_TAKEN = "That phone number cannot be used. Choose another one."
LAST_ADMIN = "This is the only administrator account, so it cannot be deleted. Make someone else an administrator first."


@dataclass(frozen=True)
class Recipient:
    """Where a code goes: the user's id (the code is bound to it) with the NEW address or number."""

    id: str
    email: str | None = None
    phone: str | None = None


def _key(user_id: str) -> str:
    return f"account-change:{user_id}"


def pending(user_id: str) -> dict | None:
    raw = services().store.get(_key(user_id))
    return json.loads(raw) if raw else None


def begin(user_id: str, kind: str, **values) -> dict:
    """Start a change; raises Conflict when another change is already in progress."""
    change = {"kind": kind, "flow": random_token(16), **values}
    if not services().store.add(_key(user_id), json.dumps(change), PENDING_TTL):
        raise Conflict(ONE_AT_A_TIME)
    return change


def update(user_id: str, change: dict) -> None:
    store = services().store
    store.set(_key(user_id), json.dumps(change), store.ttl(_key(user_id)) or PENDING_TTL)


def finish(user_id: str) -> None:
    services().store.delete(_key(user_id))


def email_in_use(email: str, user_id: str) -> bool:
    return bool(db.session.scalar(select(func.count()).select_from(User).where(User.email == email,
                                                                               User.id != user_id)))


def phone_in_use(phone: str, user_id: str) -> bool:
    return bool(db.session.scalar(select(func.count()).select_from(User).where(User.phone == phone,
                                                                               User.id != user_id)))


def apply_email(user: User, new_email: str) -> str:
    """Set the verified new address; returns the old one. Uniqueness holds even against a race."""
    old = user.email
    user.email = new_email
    user.email_verified = True
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise DomainError(EMAIL_TAKEN) from None
    return old


def apply_phone(user: User, new_phone: str | None) -> str | None:
    """Set (verified) or remove the phone; without a phone SMS codes are off. Returns the old number."""
    old = user.phone if user.phone_verified else None
    user.phone = new_phone
    user.phone_verified = bool(new_phone)
    if not new_phone:
        user.sms_otp_enabled = False
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise DomainError(PHONE_TAKEN) from None
    return old


# -- deletion ---------------------------------------------------------------------------------------


def is_last_admin(user: User) -> bool:
    if not user.is_admin:
        return False
    others = db.session.scalar(select(func.count()).select_from(User).where(
        User.is_admin.is_(True), User.id != user.id, User.disabled_at.is_(None)))
    return not others


def email_fingerprint(email: str) -> str:
    """A keyed hash of the address: lets an operator answer "was this address's account deleted?"
    without the trail keeping the address in clear."""
    return keyed_hash(services().settings.secret_key, "deleted-account-email:" + email)


def delete_account(user: User, actor_type: str, actor_id: str | None, ip: str | None = None,
                   user_agent: str | None = None, session_id: str | None = None) -> int:
    """End every session (each queues its back-channel logouts), then remove the account; tokens,
    factors, devices and consents go with it (ON DELETE CASCADE). The audit trail keeps a tombstone.
    Returns how many sessions were ended."""
    if is_last_admin(user):
        raise Conflict(LAST_ADMIN)
    svc = services()
    user_id = user.id
    ended = svc.sessions.end_all_for_user(user_id, "account_deleted", actor_type=actor_type, actor_id=actor_id)
    # One transaction: the tombstone and the removal commit together or not at all.
    svc.audit.record("account_deleted", user_id=user_id, actor_type=actor_type, actor_id=actor_id,
                     session_id=session_id, ip=ip, user_agent=user_agent, commit=False,
                     email_hash=email_fingerprint(user.email), sessions_ended=ended)
    db.session.execute(delete(User).where(User.id == user_id))
    db.session.commit()
    if user in db.session:
        db.session.expunge(user)
    finish(user_id)
    return ended
