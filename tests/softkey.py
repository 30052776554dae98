"""A software WebAuthn authenticator (ES256, attestation "none") for tests without a browser.

It builds exactly what a browser hands back from navigator.credentials.create()/get() in the
JSON shape static/webauthn.js sends, and can be told to lie (origin, RP ID, counter, flags)
so the checks of the relying party can be exercised one by one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SoftKey:
    """One credential on one authenticator."""

    def __init__(self, origin: str = "http://localhost:5000", rp_id: str = "localhost",
                 user_verified: bool = True, backed_up: bool = False):
        self.origin = origin
        self.rp_id = rp_id
        self.user_verified = user_verified
        self.backed_up = backed_up
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.sign_count = 0
        self.user_handle: bytes | None = None

    @property
    def id(self) -> str:
        return b64url(self.credential_id)

    def _flags(self, extra: int = 0) -> int:
        flags = UP | extra
        if self.user_verified:
            flags |= UV
        if self.backed_up:
            flags |= BE | BS
        return flags

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin or self.origin,
                           "crossOrigin": False}).encode()

    def _cose_public_key(self) -> bytes:
        numbers = self.private_key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})

    def create(self, options: dict, origin: str | None = None, rp_id: str | None = None,
               resident_key: bool = True) -> str:
        """The registration credential as JSON, answering `options` (from registration_options)."""
        self.user_handle = unb64url(options["user"]["id"])
        attested = bytes(16) + struct.pack(">H", len(self.credential_id)) + self.credential_id + self._cose_public_key()
        auth_data = (hashlib.sha256((rp_id or self.rp_id).encode()).digest() + bytes([self._flags(AT)])
                     + struct.pack(">I", self.sign_count) + attested)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps({
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(self._client_data("webauthn.create", options["challenge"], origin)),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {"credProps": {"rk": resident_key}},
            "authenticatorAttachment": "platform",
        })

    def get(self, options: dict, origin: str | None = None, rp_id: str | None = None,
            sign_count: int | None = None, user_handle: bytes | None = None) -> str:
        """An assertion as JSON, answering `options` (from authentication_options)."""
        self.sign_count = self.sign_count + 1 if sign_count is None else sign_count
        auth_data = (hashlib.sha256((rp_id or self.rp_id).encode()).digest() + bytes([self._flags()])
                     + struct.pack(">I", self.sign_count))
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = self.private_key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                          ec.ECDSA(hashes.SHA256()))
        handle = user_handle if user_handle is not None else self.user_handle
        return json.dumps({
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(handle) if handle else None,
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        })
