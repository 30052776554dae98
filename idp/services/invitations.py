"""Invitations (SPEC §6.10): an administrator invites by email; a single-use, expiring link sets the password.

Only a hash of the link's token is stored. A link ends when it is used, cancelled, replaced by a
resend, or expires."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from idp.crypto.secrets import random_token, sha256_hex
from idp.domain.errors import Conflict, NotFound
from idp.extensions import db
from idp.services.accounts import check_password_policy, validate_email
from idp.storage.models import Invitation, User, utcnow

INVALID_LINK = "This invitation link has expired, was cancelled, or was already used. Ask an administrator for a new one."


def invitation_status(invitation: Invitation) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.cancelled_at is not None:
        return "cancelled"
    if invitation.expires_at <= utcnow():
        return "expired"
    return "pending"


class Invitations:
    def __init__(self, svc):
        self._svc = svc
        self._settings = svc.settings

    # -- administrators --------------------------------------------------------------------

    def open(self) -> list[Invitation]:
        """Invitations neither accepted nor cancelled (expired ones included, so they can be resent)."""
        return list(db.session.scalars(
            select(Invitation).where(Invitation.accepted_at.is_(None), Invitation.cancelled_at.is_(None))
            .order_by(Invitation.created_at.desc())))

    def get(self, invitation_id: str) -> Invitation | None:
        return db.session.get(Invitation, invitation_id) if invitation_id and len(invitation_id) <= 36 else None

    def invite(self, email: str, name: str | None, is_admin: bool, actor: tuple[str, str], ip=None, ua=None):
        email = validate_email(email)
        name = (name or "").strip()[:200] or None
        existing = db.session.scalar(select(User).where(User.email == email))
        if existing is not None and existing.password_hash is not None:
            raise Conflict("There is already an account with this email address.")
        if any(i.email == email and invitation_status(i) == "pending" for i in self.open()):
            raise Conflict("This address already has a pending invitation; resend or cancel it.")
        invitation = Invitation(email=email, name=name, is_admin=bool(is_admin), invited_by=actor[1],
                                token_hash="", expires_at=utcnow())
        token = self._new_token(invitation)
        db.session.add(invitation)
        self._send_and_commit(invitation, token)
        self._audit("invitation_sent", invitation, actor, ip, ua)
        return invitation

    def resend(self, invitation: Invitation, actor: tuple[str, str], ip=None, ua=None) -> Invitation:
        """A new link and a new deadline; the old link stops working."""
        if invitation_status(invitation) not in ("pending", "expired"):
            raise Conflict("This invitation was already accepted or cancelled.")
        token = self._new_token(invitation)
        self._send_and_commit(invitation, token)
        self._audit("invitation_resent", invitation, actor, ip, ua)
        return invitation

    def cancel(self, invitation: Invitation, actor: tuple[str, str], ip=None, ua=None) -> None:
        if invitation_status(invitation) not in ("pending", "expired"):
            raise Conflict("This invitation was already accepted or cancelled.")
        invitation.cancelled_at = utcnow()
        db.session.commit()
        self._audit("invitation_cancelled", invitation, actor, ip, ua)

    def _new_token(self, invitation: Invitation) -> str:
        token = random_token(32)
        invitation.token_hash = sha256_hex(token)
        invitation.expires_at = utcnow() + timedelta(seconds=self._settings.invitation_ttl)
        return token

    def _send_and_commit(self, invitation: Invitation, token: str) -> None:
        """The row is written only once the email went out: a failed send leaves nothing half-done."""
        try:
            db.session.flush()
            self._svc.notifier.email(
                invitation.email, "invitation", name=invitation.name,
                link=f"{self._settings.issuer}/invite/{token}",
                days=max(1, self._settings.invitation_ttl // 86400),
                expires=invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC"))
        except Exception:
            db.session.rollback()
            raise
        db.session.commit()

    def _audit(self, event: str, invitation: Invitation, actor, ip, ua) -> None:
        self._svc.audit.record(event, actor_type=actor[0], actor_id=actor[1], ip=ip, user_agent=ua,
                               invitation_id=invitation.id, email=invitation.email, admin=invitation.is_admin)

    # -- the invited person ------------------------------------------------------------------

    def find_usable(self, token: str) -> Invitation | None:
        if not token or len(token) > 200:
            return None
        invitation = db.session.scalar(select(Invitation).where(Invitation.token_hash == sha256_hex(token)))
        if invitation is None or invitation_status(invitation) != "pending":
            return None
        existing = db.session.scalar(select(User).where(User.email == invitation.email))
        if existing is not None and existing.password_hash is not None:
            return None
        return invitation

    def accept(self, token: str, password: str, ip=None, ua=None) -> User:
        """Create the account (or give a password-less one its password); the link is used up at once."""
        invitation = self.find_usable(token)
        if invitation is None:
            raise NotFound(INVALID_LINK)
        check_password_policy(password, invitation.email)
        password_hash = self._svc.passwords.hash(password)
        # Claim the link in the same transaction as the account: of two concurrent posts only one wins.
        claimed = db.session.execute(
            update(Invitation)
            .where(Invitation.id == invitation.id, Invitation.token_hash == invitation.token_hash,
                   Invitation.accepted_at.is_(None), Invitation.cancelled_at.is_(None))
            .values(accepted_at=utcnow())
        ).rowcount
        if not claimed:
            db.session.rollback()
            raise NotFound(INVALID_LINK)
        user = db.session.scalar(select(User).where(User.email == invitation.email))
        if user is None:
            user = User(email=invitation.email, name=invitation.name, is_admin=invitation.is_admin)
            db.session.add(user)
        elif user.password_hash is not None:
            db.session.rollback()
            raise NotFound(INVALID_LINK)
        else:
            user.name = user.name or invitation.name
            user.is_admin = user.is_admin or invitation.is_admin
        user.email_verified = True
        user.password_hash = password_hash
        user.password_changed_at = utcnow()
        try:
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
        self._svc.audit.record("invitation_accepted", user_id=user.id, ip=ip, user_agent=ua,
                               invitation_id=invitation.id)
        return user


def invitations() -> Invitations:
    from idp.services import services

    return Invitations(services())


def invitation_json(invitation: Invitation) -> dict:
    def iso(value):
        return value.isoformat() if value else None

    return {
        "id": invitation.id,
        "email": invitation.email,
        "name": invitation.name,
        "is_admin": invitation.is_admin,
        "status": invitation_status(invitation),
        "invited_by": invitation.invited_by,
        "created_at": iso(invitation.created_at),
        "expires_at": iso(invitation.expires_at),
        "accepted_at": iso(invitation.accepted_at),
        "cancelled_at": iso(invitation.cancelled_at),
    }


