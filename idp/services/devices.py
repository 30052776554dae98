"""Trusted devices (SPEC §6.4): a browser that may skip the second factor, never the password."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select

from idp.crypto.secrets import random_token, sha256_hex
from idp.domain.errors import DomainError, NotFound
from idp.extensions import db
from idp.storage.models import TrustedDevice, utcnow

MAX_NAME = 100


def clean_device_name(name: str | None, fallback: str = "This browser") -> str:
    name = " ".join((name or "").split())[:MAX_NAME]
    return name or fallback


class TrustedDevices:
    def __init__(self, settings):
        self._settings = settings

    def trust(self, user_id: str, name: str | None, user_agent: str | None, ip: str | None) -> tuple[TrustedDevice, str]:
        token = random_token(32)
        now = utcnow()
        device = TrustedDevice(
            user_id=user_id,
            token_hash=sha256_hex(token),
            name=clean_device_name(name),
            user_agent=(user_agent or "")[:1000] or None,
            ip=ip,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self._settings.trusted_device_ttl),
        )
        db.session.add(device)
        db.session.commit()
        return device, token

    def recognise(self, user_id: str, token: str | None, touch: bool = True) -> TrustedDevice | None:
        """The device this cookie proves, if it is still trusted for this user."""
        if not token or len(token) > 100:
            return None
        device = db.session.scalar(select(TrustedDevice).where(TrustedDevice.token_hash == sha256_hex(token)))
        if device is None or device.user_id != user_id:
            return None
        if device.expires_at <= utcnow():
            db.session.delete(device)
            db.session.commit()
            return None
        if touch:
            device.last_used_at = utcnow()
            db.session.commit()
        return device

    def list(self, user_id: str) -> list[TrustedDevice]:
        now = utcnow()
        return [d for d in db.session.scalars(
            select(TrustedDevice).where(TrustedDevice.user_id == user_id).order_by(TrustedDevice.last_used_at.desc())
        ) if d.expires_at > now]

    def rename(self, user_id: str, device_id: str, name: str | None) -> TrustedDevice:
        device = db.session.get(TrustedDevice, device_id)
        if device is None or device.user_id != user_id:
            raise NotFound("No such device.")
        if not name or not name.strip():
            raise DomainError("Give the device a name.")
        device.name = clean_device_name(name)
        db.session.commit()
        return device

    def forget(self, user_id: str, device_id: str) -> bool:
        removed = db.session.execute(
            delete(TrustedDevice).where(TrustedDevice.id == device_id, TrustedDevice.user_id == user_id)
        ).rowcount
        db.session.commit()
        return bool(removed)

    def forget_all(self, user_id: str) -> int:
        removed = db.session.execute(delete(TrustedDevice).where(TrustedDevice.user_id == user_id)).rowcount
        db.session.commit()
        return removed
