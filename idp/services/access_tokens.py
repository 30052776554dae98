"""Which issued access tokens are still good: kept in the shared store, not in the database.

An access token is a signed JWT that lives minutes (RFC 9068); what the signature cannot say is
whether it was revoked since. That answer must be the same on every instance at once, and the
token, introspection and UserInfo endpoints ask it on every call, so it lives in the shared store
(Redis, or the in-process store of a single-process deployment), where each token expires by
itself when the JWT does:

- `at:<jti>` — issued and not revoked: who it was issued to, for which session and grant;
- `at-family-revoked:<family id>` — every token of a revoked grant (refresh reuse, code replay,
  revocation by the app or an admin) is dead;
- `at-session-ended:<session id>` — every token issued through an ended session is dead;
- `at-client-deleted:<client id>` — every token of a deleted client is dead.

The markers only need to outlive the tokens issued before them, so they expire after one access
token lifetime plus a margin for a token signed while the revocation was being written.

Losing the store (a Redis flush) fails closed: every access token becomes inactive and apps use
their refresh tokens, which stay in the database.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from idp.crypto.secrets import random_token

# A token signed while its grant was being revoked may be recorded a moment after the marker.
_MARKER_MARGIN_SECONDS = 60


def new_jti(family_id: str | None) -> str:
    """A random token id; one issued through a grant starts with the grant's id, so the check of a
    token can ask for the grant's revocation marker in the same round trip as everything else."""
    token = random_token(16)
    return f"{family_id}.{token}" if family_id else token


def family_of(jti: str) -> str | None:
    family_id, dot, _ = jti.rpartition(".")
    return family_id if dot else None


@dataclass(frozen=True)
class AccessTokenRecord:
    jti: str
    client_id: str
    user_id: str | None
    session_id: str | None
    family_id: str | None
    scope: str


class AccessTokenLedger:
    def __init__(self, settings, store):
        self._settings = settings
        self._store = store

    @property
    def _marker_ttl(self) -> int:
        return self._settings.access_token_ttl + _MARKER_MARGIN_SECONDS

    def record(self, token: AccessTokenRecord, expires_at: int, also_read: str | None = None) -> str | None:
        """Write the token's record; with `also_read`, return that key's value, read in the same round
        trip (the token endpoint confirms the client generation it authenticated under this way)."""
        lifetime = expires_at - int(time.time())
        if lifetime <= 0:
            return self._store.get(also_read) if also_read else None
        body = {"c": token.client_id, "u": token.user_id, "s": token.session_id, "f": token.family_id,
                "scope": token.scope}
        value = json.dumps(body, separators=(",", ":"))
        if also_read:
            return self._store.set_and_get(f"at:{token.jti}", value, lifetime, also_read)
        self._store.set(f"at:{token.jti}", value, lifetime)
        return None

    def find(self, claims: dict) -> AccessTokenRecord | None:
        """The record of an unrevoked token whose grant, session and client still stand; None otherwise."""
        return self.find_and_read(claims)[0]

    def find_and_read(self, claims: dict, *also_read: str) -> tuple[AccessTokenRecord | None, list[str | None]]:
        """`find`, and the values of the keys `also_read` from the same round trip.

        `claims` are those of a verified token, so its client, session and grant (named in the jti,
        see `new_jti`) are read from them and one round trip answers for all four keys."""
        jti = claims["jti"]
        family_id = family_of(jti)
        keys = [f"at:{jti}", f"at-client-deleted:{claims.get('client_id')}"]
        if claims.get("sid"):
            keys.append(f"at-session-ended:{claims['sid']}")
        if family_id:
            keys.append(f"at-family-revoked:{family_id}")
        checked = len(keys)
        values = self._store.get_many(*keys, *also_read)
        extra = values[checked:]
        raw, *markers = values[:checked]
        if raw is None or any(marker is not None for marker in markers):
            return None, extra
        body = json.loads(raw)
        # The signed claims and the record must agree, or this is not the token that was recorded.
        if body["f"] != family_id or (body["s"] and body["s"] != claims.get("sid")):
            return None, extra
        return AccessTokenRecord(jti, body["c"], body["u"], body["s"], body["f"], body["scope"]), extra

    def revoke(self, jti: str) -> None:
        self._store.delete(f"at:{jti}")

    def revoke_family(self, family_id: str) -> None:
        self._store.set(f"at-family-revoked:{family_id}", "1", self._marker_ttl)

    def revoke_client(self, client_id: str) -> None:
        self._store.set(f"at-client-deleted:{client_id}", "1", self._marker_ttl)

    def end_sessions(self, session_ids) -> None:
        self._store.set_many({f"at-session-ended:{sid}": "1" for sid in session_ids}, self._marker_ttl)
