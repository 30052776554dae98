"""Relying apps: registration rules, secret checks, and the per-process copy the endpoints read."""

from __future__ import annotations

import ipaddress
import threading
from types import SimpleNamespace
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from idp.crypto.secrets import constant_time_equal, keyed_hash, random_token
from idp.domain.errors import Conflict, DomainError, NotFound
from idp.extensions import db
from idp.storage.models import Client

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
SCOPES = ("openid", "profile", "email", "phone", "offline_access", "sessions", "admin")
DEFAULT_SCOPE = "openid profile email phone offline_access"
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
# Changes when any client changes; a process's copies are good while it reads the value they were made under.
GENERATION_KEY = "clients:generation"
_GENERATION_TTL = 30 * 24 * 3600
# Bounds the copies one process keeps: past it they are dropped and read again as used.
_CACHE_LIMIT = 10_000


def is_loopback_host(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def validate_redirect_uri(uri: str, kind: str = "redirect URI") -> str:
    """RFC 9700 §2.1 and §2.6: absolute, no fragment, https unless loopback; custom schemes for native apps."""
    if not isinstance(uri, str) or not uri or len(uri) > 2000 or any(c.isspace() for c in uri):
        raise DomainError(f"Invalid {kind}: {uri!r}")
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or "#" in uri:
        raise DomainError(f"The {kind} must be absolute and carry no fragment: {uri!r}")
    if parts.scheme == "https":
        if not parts.hostname:
            raise DomainError(f"The {kind} has no host: {uri!r}")
    elif parts.scheme == "http":
        if not is_loopback_host(parts.hostname):
            raise DomainError(f"A plain-http {kind} is only allowed for loopback addresses: {uri!r}")
    elif parts.scheme in ("javascript", "data", "file", "vbscript"):
        raise DomainError(f"The {kind} scheme is not allowed: {uri!r}")
    elif "." not in parts.scheme:
        # RFC 8252 §7.1: private-use schemes are reverse domain names, e.g. com.example.app:/cb
        raise DomainError(f"A native-app {kind} must use a reverse-domain scheme: {uri!r}")
    if parts.username or parts.password:
        raise DomainError(f"The {kind} must not carry credentials: {uri!r}")
    return uri


def validate_backchannel_logout_uri(uri: str | None) -> str | None:
    """OIDC Back-Channel Logout §2.2: an absolute http(s) URL, https unless loopback; empty means none."""
    if not uri:
        return None
    if not isinstance(uri, str) or len(uri) > 2000 or any(c.isspace() for c in uri):
        raise DomainError(f"Invalid back-channel logout URI: {uri!r}")
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri or not parts.hostname or parts.scheme not in ("https", "http"):
        raise DomainError("The back-channel logout URI must be an absolute http(s) URL without fragment.")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise DomainError("The back-channel logout URI must use https unless it is a loopback address.")
    return uri


# What an administrator may change after registration; `public` and the secret are fixed at birth.
EDITABLE_FIELDS = (
    "name",
    "redirect_uris",
    "post_logout_redirect_uris",
    "backchannel_logout_uri",
    "grant_types",
    "scope",
    "first_party",
    "token_endpoint_auth_method",
    "id_token_signed_response_alg",
)


def _as_list(values, what: str) -> list:
    if isinstance(values, str):
        raise DomainError(f"Give the {what} as a list.")
    return list(values or ())


def _plausible_id(client_id) -> bool:
    return bool(client_id) and isinstance(client_id, str) and len(client_id) <= 64


class ClientSnapshot(SimpleNamespace):
    """A client's registered fields, detached from any database session so threads can share it."""

    @classmethod
    def of(cls, row: Client) -> ClientSnapshot:
        values = {attr.key: getattr(row, attr.key) for attr in Client.__mapper__.column_attrs}
        for name in ("redirect_uris", "post_logout_redirect_uris", "grant_types"):
            values[name] = tuple(values[name] or ())
        return cls(**values)

    @property
    def is_public(self) -> bool:
        return self.secret_hash is None


class Clients:
    def __init__(self, settings, store, access_tokens):
        self._settings = settings
        self._store = store
        self._access_tokens = access_tokens
        self._copies: dict[str, tuple[str, ClientSnapshot]] = {}
        self._copies_lock = threading.Lock()

    def _secret_hash(self, secret: str) -> str:
        return keyed_hash(self._settings.secret_key, "client-secret:" + secret)

    def _checked(
        self,
        *,
        public: bool,
        name: str,
        redirect_uris,
        post_logout_redirect_uris,
        backchannel_logout_uri: str | None,
        grant_types,
        scope: str | None,
        first_party: bool,
        token_endpoint_auth_method: str | None,
        id_token_signed_response_alg: str | None,
    ) -> dict:
        """The registration rules, shared by create and update: the column values, or a DomainError
        naming the first rule broken. Nothing is written here."""
        name = (name or "").strip() if isinstance(name, str) or name is None else ""
        if not name or len(name) > 200:
            raise DomainError("A client needs a name of 1 to 200 characters.")
        grant_types = list(dict.fromkeys(_as_list(grant_types, "grant types")))
        if not grant_types:
            raise DomainError(f"Choose at least one grant type from {', '.join(GRANT_TYPES)}.")
        for grant in grant_types:
            if grant not in GRANT_TYPES:
                raise DomainError(f"Unsupported grant type {grant!r}; choose from {', '.join(GRANT_TYPES)}.")
        if public and "client_credentials" in grant_types:
            raise DomainError("A public client cannot use client_credentials.")
        redirect_uris = [validate_redirect_uri(u) for u in _as_list(redirect_uris, "redirect URIs")]
        if "authorization_code" in grant_types and not redirect_uris:
            raise DomainError("The authorization_code grant needs at least one redirect URI.")
        post_logout = [validate_redirect_uri(u, "post-logout redirect URI")
                       for u in _as_list(post_logout_redirect_uris, "post-logout redirect URIs")]
        backchannel = validate_backchannel_logout_uri(backchannel_logout_uri)
        scopes = (scope or "").split() if isinstance(scope, str) or scope is None else None
        if not scopes:
            raise DomainError(f"Give at least one scope from {' '.join(SCOPES)}.")
        for s in scopes:
            if s not in SCOPES:
                raise DomainError(f"Unknown scope {s!r}; choose from {' '.join(SCOPES)}.")
        if token_endpoint_auth_method is not None and token_endpoint_auth_method not in AUTH_METHODS:
            raise DomainError(f"Unsupported token endpoint auth method {token_endpoint_auth_method!r}.")
        if public:
            if token_endpoint_auth_method not in (None, "none"):
                raise DomainError("A public client authenticates with 'none'.")
            token_endpoint_auth_method = "none"
        elif token_endpoint_auth_method == "none":
            raise DomainError("A confidential client authenticates with its secret; register a public client "
                              "for apps that cannot keep one.")
        alg = id_token_signed_response_alg or self._settings.default_signing_alg
        if alg not in ("ES256", "RS256"):
            raise DomainError("The ID-token signing algorithm must be ES256 or RS256.")
        return {
            "name": name,
            "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": post_logout,
            "backchannel_logout_uri": backchannel,
            "grant_types": grant_types,
            "scope": " ".join(dict.fromkeys(scopes)),
            "first_party": bool(first_party),
            "token_endpoint_auth_method": token_endpoint_auth_method,
            "id_token_signed_response_alg": alg,
        }

    def create(
        self,
        name: str,
        redirect_uris=(),
        post_logout_redirect_uris=(),
        public: bool = False,
        backchannel_logout_uri: str | None = None,
        grant_types=(),
        scope: str | None = None,
        first_party: bool = False,
        token_endpoint_auth_method: str | None = None,
        id_token_signed_response_alg: str | None = None,
        client_id: str | None = None,
    ) -> tuple[Client, str | None]:
        values = self._checked(
            public=public,
            name=name,
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=post_logout_redirect_uris,
            backchannel_logout_uri=backchannel_logout_uri,
            grant_types=grant_types or DEFAULT_GRANT_TYPES,
            scope=scope or DEFAULT_SCOPE,
            first_party=first_party,
            token_endpoint_auth_method=token_endpoint_auth_method,
            id_token_signed_response_alg=id_token_signed_response_alg,
        )
        secret = None if public else random_token(32)
        client = Client(
            client_id=client_id or random_token(16),
            secret_hash=self._secret_hash(secret) if secret else None,
            **values,
        )
        db.session.add(client)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise Conflict("A client with this id already exists.") from None
        return client, secret

    def update(self, client_id: str, **fields) -> dict:
        """Change registered fields under the same rules as `create`; all or nothing.
        Returns {field: [old, new]} for what changed."""
        unknown = set(fields) - set(EDITABLE_FIELDS)
        if unknown:
            raise DomainError(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
        client = self._existing(client_id)
        current = {field: getattr(client, field) for field in EDITABLE_FIELDS}
        values = self._checked(public=client.is_public, **{**current, **fields})
        changes = {field: [current[field], value] for field, value in values.items() if current[field] != value}
        for field, (_, value) in changes.items():
            setattr(client, field, value)
        db.session.commit()
        self._changed()
        return changes

    def rotate_secret(self, client_id: str) -> str:
        """A new secret, shown once; the old one stops working at once."""
        client = self._existing(client_id)
        if client.is_public:
            raise DomainError("A public client has no secret.")
        secret = random_token(32)
        client.secret_hash = self._secret_hash(secret)
        db.session.commit()
        self._changed()
        return secret

    def delete(self, client_id: str) -> None:
        """The client goes with its codes, grants, tokens, consents and pending logout deliveries
        (ON DELETE CASCADE), so nothing it was issued stays usable."""
        client = self._existing(client_id)
        db.session.delete(client)
        db.session.commit()
        self._changed()
        self._access_tokens.revoke_client(client_id)

    def list(self) -> list[Client]:
        return list(db.session.scalars(select(Client).order_by(Client.name, Client.client_id)))

    def _existing(self, client_id: str) -> Client:
        client = self.get(client_id)
        if client is None:
            raise NotFound("No such client.")
        return client

    def get(self, client_id: str | None) -> Client | None:
        if not _plausible_id(client_id):
            return None
        return db.session.get(Client, client_id)

    def snapshot(self, client_id: str | None, generation: str | None = None) -> ClientSnapshot | None:
        """The client as registered, for the authorization and token endpoints.

        Read from the database once per process and change: every instance sees an update, a secret
        rotation or a deletion on its next request, because the check of the generation in the shared
        store (one round trip) comes before any copy is used. A caller that has just read the
        generation passes it in."""
        if not _plausible_id(client_id):
            return None
        if generation is None:
            generation = self.generation()
        copy = self._copies.get(client_id)
        if copy is not None and copy[0] == generation:
            return copy[1]
        row = self.get(client_id)
        if row is None:
            return None
        snapshot = ClientSnapshot.of(row)
        with self._copies_lock:
            if len(self._copies) >= _CACHE_LIMIT:
                self._copies.clear()
            self._copies[client_id] = (generation, snapshot)
        return snapshot

    def copy(self, client_id: str | None) -> tuple[str, ClientSnapshot] | None:
        """This process's copy of the client and the generation it was made under, without asking the
        store: whoever uses it must read GENERATION_KEY before answering and find the same value (the
        token endpoint does so in the round trip it makes anyway, see idp.oidc.token_endpoints)."""
        return self._copies.get(client_id) if _plausible_id(client_id) else None

    def generation(self) -> str:
        generation = self._store.get(GENERATION_KEY)
        if generation is None:
            # First use, or the store was emptied: start a generation no copy was made under.
            self._store.add(GENERATION_KEY, random_token(12), _GENERATION_TTL)
            generation = self._store.get(GENERATION_KEY) or ""
        return generation

    def _changed(self) -> None:
        """After the commit: a copy made from the old row before this point is never used again."""
        self._store.set(GENERATION_KEY, random_token(12), _GENERATION_TTL)

    def check_secret(self, client: Client | ClientSnapshot, secret: str) -> bool:
        if client.secret_hash is None or not secret:
            return False
        return constant_time_equal(client.secret_hash, self._secret_hash(secret))
