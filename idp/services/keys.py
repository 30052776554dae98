"""Signing keys in the database, and the key ring every process signs and verifies with."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import select

from idp.crypto.keys import SUPPORTED_ALGS, KeyMaterial, KeyRing, generate_key
from idp.extensions import db
from idp.storage.models import SigningKey, utcnow

# Another process (`idp keys rotate`) may add a key; each process rereads the keys this often.
_RELOAD_SECONDS = 30


class KeyService:
    def __init__(self, settings):
        self._settings = settings
        self._ring: KeyRing | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def ensure_keys(self) -> list[str]:
        """Create an active key for each algorithm that lacks one; returns the new key ids."""
        active = {k.alg for k in db.session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None)))}
        created = [self._add(alg) for alg in SUPPORTED_ALGS if alg not in active]
        db.session.commit()
        self.invalidate()
        return created

    def rotate(self) -> list[str]:
        now = utcnow()
        for key in db.session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
            key.retired_at = now
        created = [self._add(alg) for alg in SUPPORTED_ALGS]
        db.session.commit()
        self.invalidate()
        return created

    def _add(self, alg: str) -> str:
        material = generate_key(alg)
        db.session.add(
            SigningKey(
                kid=material.kid, alg=alg, private_jwk=material.private_jwk, public_jwk=material.public_jwk
            )
        )
        return material.kid

    def invalidate(self) -> None:
        with self._lock:
            self._ring = None

    def ring(self) -> KeyRing:
        ring = self.fresh_ring()
        if ring is not None:
            return ring
        with self._lock:
            if self._ring is None or time.monotonic() - self._loaded_at >= _RELOAD_SECONDS:
                self._ring = self._load()
                self._loaded_at = time.monotonic()
            return self._ring

    def fresh_ring(self) -> KeyRing | None:
        """The ring if it was read within the reload interval, without touching the database (and so
        without an application context); None when the next `ring()` call would reread it."""
        ring = self._ring
        if ring is not None and time.monotonic() - self._loaded_at < _RELOAD_SECONDS:
            return ring
        return None

    def _load(self) -> KeyRing:
        grace = max(self._settings.retired_key_grace, self._settings.id_token_ttl, self._settings.access_token_ttl)
        oldest_published = utcnow() - timedelta(seconds=grace)
        # A connection of its own: the caller's transaction may hold unsaved work.
        with db.engine.connect() as conn:
            rows = conn.execute(select(SigningKey.__table__).order_by(SigningKey.created_at.desc())).all()
        active, published = [], []
        for row in rows:
            material = KeyMaterial(row.kid, row.alg, row.private_jwk, row.public_jwk)
            if row.retired_at is None:
                active.append(material)
                published.append(material)
            elif row.retired_at >= oldest_published:
                published.append(material)
        return KeyRing(active, published)

