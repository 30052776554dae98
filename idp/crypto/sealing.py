"""Secrets we must read back (TOTP seeds) are sealed with AES-GCM under a key derived from
IDP_SECRET_KEY, so a database dump alone does not yield them."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class Sealer:
    def __init__(self, secret_key: str, purpose: str):
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret_key.encode())
        self._aead = AESGCM(key)
        self._purpose = purpose.encode()

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), self._purpose)
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str) -> str:
        raw = base64.urlsafe_b64decode(sealed.encode())
        return self._aead.decrypt(raw[:12], raw[12:], self._purpose).decode()
