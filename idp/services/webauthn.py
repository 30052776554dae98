"""WebAuthn (py_webauthn): registering security keys and passkeys, and verifying assertions.

Every challenge is 256 random bits kept in the shared store for CHALLENGE_TTL and *taken*
(GETDEL) before anything is checked, so it works once whatever the outcome: a captured
assertion replayed later finds no challenge (NIST SP 800-63B §5.2.8, CONFORMANCE C12).
The origin and RP ID come from the issuer; py_webauthn refuses an assertion made for any other.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idp.domain.errors import Conflict, DomainError
from idp.extensions import db
from idp.storage.models import User, WebAuthnCredential, utcnow

log = logging.getLogger("idp.webauthn")

# Five minutes to touch the key; the browser is told the same through `timeout`.
CHALLENGE_TTL = 5 * 60
# 256 bits, well above the 64 that SP 800-63B §5.1.9.2 asks for.
CHALLENGE_BYTES = 32
DEFAULT_NAME = "Passkey"

REGISTRATION_FAILED = "We could not add this passkey or security key. Please try again."
REGISTRATION_EXPIRED = "The set-up took too long. Please start again."


@dataclass(frozen=True)
class VerifiedAssertion:
    credential: WebAuthnCredential
    # The authenticator checked a PIN or biometric: a passkey alone is then multi-factor.
    user_verified: bool


def origin_of(issuer: str) -> str:
    """The web origin browsers put in clientDataJSON: scheme, host, and a non-default port only."""
    parts = urlsplit(issuer)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


class WebAuthnService:
    def __init__(self, settings, store):
        self._settings = settings
        self._store = store
        self._origin = origin_of(settings.issuer)

    # -- what a user has ---------------------------------------------------------------

    def list(self, user: User) -> list[WebAuthnCredential]:
        return db.session.scalars(
            select(WebAuthnCredential)
            .where(WebAuthnCredential.user_id == user.id)
            .order_by(WebAuthnCredential.created_at)
        ).all()

    def remove(self, user: User, credential_id: str) -> bool:
        """Remove one of the user's own credentials (by row id); another user's is never touched."""
        removed = db.session.execute(
            delete(WebAuthnCredential).where(
                WebAuthnCredential.id == str(credential_id)[:36], WebAuthnCredential.user_id == user.id
            )
        ).rowcount
        db.session.commit()
        return bool(removed)

    # -- registration ------------------------------------------------------------------

    def registration_options(self, user: User) -> dict:
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        options = generate_registration_options(
            rp_id=self._settings.rp_id,
            rp_name=self._settings.product_name,
            # The account id, not the email: the handle is stored on the authenticator and must not be PII.
            user_id=user.id.encode(),
            user_name=user.email,
            user_display_name=user.name or user.email,
            challenge=challenge,
            timeout=CHALLENGE_TTL * 1000,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            # The browser refuses to register an authenticator twice for the same account.
            exclude_credentials=[_descriptor(c) for c in self.list(user)],
        )
        self._store.set(_registration_key(user.id), bytes_to_base64url(challenge), CHALLENGE_TTL)
        body = options_to_json_dict(options)
        # credProps tells whether the key was stored on the authenticator (discoverable): a passkey.
        body["extensions"] = {"credProps": True}
        return body

    def finish_registration(self, user: User, credential_json: str, name: str | None) -> WebAuthnCredential:
        challenge = self._store.take(_registration_key(user.id))
        if challenge is None:
            raise DomainError(REGISTRATION_EXPIRED, "webauthn registration: no pending challenge")
        try:
            data = json.loads(credential_json)
            credential = parse_registration_credential_json(data)
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=base64url_to_bytes(challenge),
                expected_rp_id=self._settings.rp_id,
                expected_origin=self._origin,
            )
        except Exception as exc:  # py_webauthn raises many kinds (JSON, base64, CBOR, crypto) for bad input
            raise DomainError(REGISTRATION_FAILED, f"webauthn registration rejected: {exc!r}") from None
        discoverable = _cred_props_rk(data)
        row = WebAuthnCredential(
            user_id=user.id,
            credential_id=bytes_to_base64url(verified.credential_id),
            public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count,
            transports=[t.value for t in (credential.response.transports or [])],
            name=(name or "").strip()[:100] or DEFAULT_NAME,
            is_passkey=discoverable and verified.user_verified,
            backed_up=verified.credential_backed_up,
        )
        db.session.add(row)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise Conflict("This passkey or security key is already registered.") from None
        return row

    # -- authentication ----------------------------------------------------------------

    def authentication_options(self, flow_key: str, user: User | None = None) -> dict:
        """Options bound to `flow_key`. With a user: their credentials (second factor).
        Without: an empty allow list, so the authenticator offers its discoverable passkeys,
        and user verification is required because the passkey is then the only proof."""
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        options = generate_authentication_options(
            rp_id=self._settings.rp_id,
            challenge=challenge,
            timeout=CHALLENGE_TTL * 1000,
            allow_credentials=[_descriptor(c) for c in self.list(user)] if user else [],
            user_verification=(UserVerificationRequirement.PREFERRED if user
                               else UserVerificationRequirement.REQUIRED),
        )
        record = {"challenge": bytes_to_base64url(challenge), "user": user.id if user else None}
        self._store.set(_authentication_key(flow_key), json.dumps(record), CHALLENGE_TTL)
        return options_to_json_dict(options)

    def verify_authentication(self, credential_json: str, flow_key: str,
                              user: User | None = None) -> VerifiedAssertion | None:
        """The verified assertion, or None for anything wrong. Store outages propagate (fail closed)."""
        raw = self._store.take(_authentication_key(flow_key)) if flow_key else None
        if raw is None:
            return None
        pending = json.loads(raw)
        owner = user.id if user else pending.get("user")
        if user is not None and pending.get("user") not in (None, user.id):
            return None
        try:
            credential = parse_authentication_credential_json(credential_json)
        except Exception as exc:
            log.info("webauthn assertion unreadable: %r", exc)
            return None
        row = db.session.scalar(select(WebAuthnCredential).where(
            WebAuthnCredential.credential_id == bytes_to_base64url(credential.raw_id)))
        if row is None or (owner is not None and row.user_id != owner):
            return None
        handle = credential.response.user_handle
        if handle is not None and handle != row.user_id.encode():
            return None
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=base64url_to_bytes(pending["challenge"]),
                expected_rp_id=self._settings.rp_id,
                expected_origin=self._origin,
                credential_public_key=base64url_to_bytes(row.public_key),
                # py_webauthn refuses a count that does not grow, unless both are zero (no counter).
                credential_current_sign_count=row.sign_count,
            )
        except Exception as exc:
            log.info("webauthn assertion rejected for credential %s: %r", row.id, exc)
            return None
        # Compare-and-set: of two concurrent assertions carrying the same count only one wins.
        claimed = db.session.execute(
            update(WebAuthnCredential)
            .where(WebAuthnCredential.id == row.id, WebAuthnCredential.sign_count == row.sign_count)
            .values(sign_count=verified.new_sign_count, last_used_at=utcnow(),
                    backed_up=verified.credential_backed_up)
        ).rowcount
        db.session.commit()
        if not claimed:
            return None
        db.session.refresh(row)
        return VerifiedAssertion(credential=row, user_verified=verified.user_verified)


def _registration_key(user_id: str) -> str:
    return f"webauthn:register:{user_id}"


def _authentication_key(flow_key: str) -> str:
    return f"webauthn:authenticate:{flow_key}"


def _descriptor(row: WebAuthnCredential) -> PublicKeyCredentialDescriptor:
    transports = []
    for value in row.transports or []:
        try:
            transports.append(AuthenticatorTransport(value))
        except ValueError:
            pass  # a transport newer than this py_webauthn: the hint is optional
    return PublicKeyCredentialDescriptor(id=base64url_to_bytes(row.credential_id), transports=transports or None)


def _cred_props_rk(data) -> bool:
    results = data.get("clientExtensionResults") if isinstance(data, dict) else None
    props = results.get("credProps") if isinstance(results, dict) else None
    return isinstance(props, dict) and props.get("rk") is True
