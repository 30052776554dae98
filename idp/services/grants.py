"""Authorization codes, token families, access and refresh tokens: issue, consume, revoke.

Codes and refresh tokens are consumed atomically (UPDATE … WHERE used_at IS NULL RETURNING):
of two concurrent redemptions exactly one wins, and the loser is treated as a replay. Access
tokens are JWTs whose revocation state lives in the shared store (idp.services.access_tokens).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import NoReturn

from sqlalchemy import bindparam, exists, func, or_, select, true, update

from idp.crypto.keys import ACCESS_TOKEN_TYPE, InvalidJWT
from idp.crypto.secrets import random_token, sha256_hex
from idp.extensions import db
from idp.services.access_tokens import AccessTokenLedger, AccessTokenRecord, new_jti
from idp.services.clients import GENERATION_KEY
from idp.services.sessions import past_limits
from idp.storage.models import (
    AuthorizationCode,
    BrowserSession,
    Client,
    RefreshToken,
    TokenFamily,
    new_id,
    utcnow,
)
from idp.storage.rows import alone, execute_core, row_by_id

log = logging.getLogger("idp.grants")

_CODES = AuthorizationCode.__table__
# Built once: building this statement and its cache key took 140 µs of every code exchange. (An
# UPDATE's bind names must differ from its column names.) A lone statement, committed by itself: a
# code is burnt by any attempt, whatever happens to the exchange after it. It also names the grant
# the code is exchanged for, its id chosen before the grant is written, so a replay, however soon,
# finds what to revoke.
_CONSUME_CODE = (
    _CODES.update()
    .where(
        _CODES.c.code_hash == bindparam("presented_hash"),
        _CODES.c.client_id == bindparam("presenting_client"),
        _CODES.c.used_at.is_(None),
    )
    .values(used_at=bindparam("consumed_at"), family_id=bindparam("issued_family"))
    .returning(*_CODES.c)
)

# The refresh grant's statements, built once for the same reason: building them and their cache
# keys was a third of a rotation's Python time. They are Core statements on the tables, which skip
# the ORM's bulk-statement machinery (no objects of these rows are loaded to update). Only the
# columns rotation, introspection and revocation read: each column returned costs the driver and the
# result a description entry and a conversion on every refresh.
_FOUND_PARTS = {
    "token": (RefreshToken, ("token_hash", "created_at", "expires_at", "used_at")),
    "family": (TokenFamily, ("id", "client_id", "user_id", "session_id", "scope", "auth_time", "acr",
                             "expires_at", "revoked_at")),
    "session": (BrowserSession, ("id", "ended_at", "expires_at", "last_active_at")),
}
_REFRESH_TOKENS = RefreshToken.__table__
_FAMILIES = TokenFamily.__table__
_SESSIONS = BrowserSession.__table__


def _found_columns(token_columns) -> list:
    """The columns of a FoundRefreshToken, labelled `part.name`, the token's taken from `token_columns`."""
    tables = {"token": token_columns, "family": _FAMILIES.c, "session": _SESSIONS.c}
    return [tables[part][name].label(f"{part}.{name}") for part, (_, names) in _FOUND_PARTS.items() for name in names]


_FIND_REFRESH_TOKEN = (
    select(*_found_columns(_REFRESH_TOKENS.c))
    .join_from(_REFRESH_TOKENS, _FAMILIES, _FAMILIES.c.id == _REFRESH_TOKENS.c.family_id)
    .outerjoin(_SESSIONS, _SESSIONS.c.id == _FAMILIES.c.session_id)
    .where(_REFRESH_TOKENS.c.token_hash == bindparam("presented_hash"))
)
_INSERT_REFRESH_TOKEN = _REFRESH_TOKENS.insert()
# A presented token is consumed only when it can be used: unused and unexpired, of this client's
# grant, the grant neither revoked nor expired, and the grant's session, if it has one, open and
# within its limits. Bind names differ from the columns', which an UPDATE or INSERT would take as
# its values.
_NOW = bindparam("now", type_=_REFRESH_TOKENS.c.used_at.type)
_USABLE_FAMILIES = select(_FAMILIES.c.id).where(
    _FAMILIES.c.client_id == bindparam("presenting_client"),
    _FAMILIES.c.revoked_at.is_(None),
    _FAMILIES.c.expires_at > _NOW,
    or_(_FAMILIES.c.session_id.is_(None), exists().where(
        _SESSIONS.c.id == _FAMILIES.c.session_id,
        _SESSIONS.c.ended_at.is_(None),
        _SESSIONS.c.expires_at > _NOW,
        _SESSIONS.c.last_active_at > bindparam("idle_cutoff", type_=_SESSIONS.c.last_active_at.type),
    )),
)
_CONSUME_USABLE_REFRESH_TOKEN = (
    _REFRESH_TOKENS.update()
    .where(_REFRESH_TOKENS.c.token_hash == bindparam("presented_hash"), _REFRESH_TOKENS.c.used_at.is_(None),
           _REFRESH_TOKENS.c.expires_at > _NOW, _REFRESH_TOKENS.c.family_id.in_(_USABLE_FAMILIES))
    .values(used_at=_NOW)
)
_RELEASE_REFRESH_TOKEN = (
    _REFRESH_TOKENS.update().where(_REFRESH_TOKENS.c.token_hash == bindparam("presented_hash"))
    .values(used_at=None)
)
_DROP_REFRESH_TOKEN = _REFRESH_TOKENS.delete().where(_REFRESH_TOKENS.c.token_hash == bindparam("successor_hash"))


# Rotation as one statement on PostgreSQL, which can change rows inside a WITH: consume the presented
# token, insert its successor and read the token's grant and session, atomically, in a single round
# trip in autocommit mode. No row back means nothing was consumed (see `_refuse`). Elsewhere the
# same steps run as three statements in one transaction.
_CONSUMED = _CONSUME_USABLE_REFRESH_TOKEN.returning(*_REFRESH_TOKENS.c).cte("consumed")
_SUCCESSOR = (
    _REFRESH_TOKENS.insert().from_select(
        ["token_hash", "family_id", "created_at", "expires_at"],
        select(bindparam("successor_hash", type_=_REFRESH_TOKENS.c.token_hash.type), _CONSUMED.c.family_id, _NOW,
               func.least(bindparam("successor_idle_expiry", type_=_REFRESH_TOKENS.c.expires_at.type),
                          _FAMILIES.c.expires_at))
        .join_from(_CONSUMED, _FAMILIES, _FAMILIES.c.id == _CONSUMED.c.family_id),
    )
    .returning(_REFRESH_TOKENS.c.token_hash)
    .cte("successor")
)
_ROTATE_REFRESH_TOKEN = (
    select(*_found_columns(_CONSUMED.c))
    .select_from(_CONSUMED)
    .join(_FAMILIES, _FAMILIES.c.id == _CONSUMED.c.family_id)
    .outerjoin(_SESSIONS, _SESSIONS.c.id == _FAMILIES.c.session_id)
    .join(_SUCCESSOR, true())  # a data-changing WITH is only written into the statement when referenced
)

# The rows a code exchange and an authorization write, as plain statements on their tables.
_INSERT_TOKEN_FAMILY = TokenFamily.__table__.insert()
_INSERT_CODE = _CODES.insert()


class GrantError(Exception):
    """The code or refresh token cannot be used; `replay` says whether reuse was detected."""

    def __init__(self, reason: str, replay: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.replay = replay


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    scope: str
    family_id: str | None
    refresh_token: str | None = None
    jti: str = ""


@dataclass(frozen=True)
class ConsumedCode:
    """A code just marked used, and its live session: kept together because SQLAlchemy's identity
    map holds rows weakly, and issuing reads the session again otherwise."""

    code: SimpleNamespace  # the columns of the code's row, as consuming it returned them
    session: BrowserSession


@dataclass(frozen=True)
class FoundRefreshToken:
    """A refresh token with its grant and the session the grant came from, read in one query.

    Read-only copies of the columns of the three rows that _FOUND_PARTS names (under the mapped
    attribute names, not ORM objects): nothing changes them in place, and loading three ORM objects
    per refresh cost more than the query."""

    token: SimpleNamespace
    family: SimpleNamespace
    session: SimpleNamespace | None


def _found_refresh_token(row: dict) -> FoundRefreshToken:
    parts: dict[str, dict] = {part: {} for part in _FOUND_PARTS}
    for label, value in row.items():
        part, _, attr = label.partition(".")
        parts[part][attr] = value
    session = parts["session"]
    return FoundRefreshToken(SimpleNamespace(**parts["token"]), SimpleNamespace(**parts["family"]),
                             SimpleNamespace(**session) if session["id"] is not None else None)


@dataclass(frozen=True)
class ActiveAccessToken:
    jti: str
    client_id: str
    user_id: str | None
    session_id: str | None
    scope: str
    claims: dict

    @property
    def scopes(self) -> set[str]:
        return set(self.scope.split())


def _presentable(value) -> bool:
    """A code or refresh token worth hashing and looking up: a non-empty string of sane length."""
    return isinstance(value, str) and 0 < len(value) <= 200


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


class Grants:
    def __init__(self, settings, keys, access_tokens: AccessTokenLedger):
        self._settings = settings
        self._keys = keys
        self.access_tokens = access_tokens

    # -- authorization codes --------------------------------------------------------------

    def create_code(
        self,
        *,
        client_id: str,
        user_id: str,
        session_id: str,
        redirect_uri: str,
        scope: str,
        nonce: str | None,
        code_challenge: str | None,
        code_challenge_method: str | None,
        auth_time: datetime,
        acr: str,
        amr,
    ) -> str:
        code = random_token(32)
        now = utcnow()
        execute_core(_INSERT_CODE, {
            "code_hash": sha256_hex(code), "client_id": client_id, "user_id": user_id, "session_id": session_id,
            "redirect_uri": redirect_uri, "scope": scope, "nonce": nonce, "code_challenge": code_challenge,
            "code_challenge_method": code_challenge_method, "auth_time": auth_time, "acr": acr, "amr": list(amr),
            "created_at": now, "expires_at": now + timedelta(seconds=self._settings.authorization_code_ttl),
        })
        db.session.commit()
        return code

    def consume_code(self, code: str, client_id: str) -> ConsumedCode:
        """Mark the code used and return it; a second use revokes what the first one issued."""
        if not _presentable(code):
            raise GrantError("invalid code")
        code_hash = sha256_hex(code)
        now = utcnow()
        _, row = alone(_CONSUME_CODE, {"presented_hash": code_hash, "presenting_client": client_id,
                                       "consumed_at": now, "issued_family": new_id()})
        if row is None:
            used = db.session.scalar(
                select(AuthorizationCode).where(
                    AuthorizationCode.code_hash == code_hash, AuthorizationCode.client_id == client_id
                )
            )
            if used is not None and used.family_id:
                self.revoke_family(used.family_id, "code_replayed")
            db.session.commit()
            raise GrantError("code already used" if used is not None else "unknown code", replay=used is not None)
        consumed = SimpleNamespace(**row)
        if consumed.expires_at <= now:
            raise GrantError("code expired")
        session = row_by_id(BrowserSession, consumed.session_id)
        if session is None or session.ended_at is not None:
            raise GrantError("the session this code came from has ended")
        return ConsumedCode(consumed, session)

    # -- issuing ---------------------------------------------------------------------------

    def issue_for_code(self, consumed: ConsumedCode, client: Client, with_refresh: bool) -> IssuedTokens:
        """Commits the new grant together with whatever the caller added to the transaction."""
        now = utcnow()
        code, session = consumed.code, consumed.session
        family = SimpleNamespace(
            id=code.family_id,
            client_id=client.client_id,
            user_id=code.user_id,
            session_id=code.session_id,
            scope=code.scope,
            auth_time=code.auth_time,
            acr=code.acr,
            amr=list(code.amr or ()),
            nonce=code.nonce,
            created_at=now,
            expires_at=now + timedelta(seconds=self._settings.refresh_token_absolute_ttl),
            revoked_at=None,
            revoke_reason=None,
        )
        # Plain statements built once, as for the refresh grant: the ORM's unit of work (add, flush)
        # cost more than the INSERT itself.
        execute_core(_INSERT_TOKEN_FAMILY, vars(family))
        refresh = None
        if with_refresh:
            refresh = random_token(32)
            execute_core(_INSERT_REFRESH_TOKEN, {
                "token_hash": sha256_hex(refresh), "family_id": family.id, "created_at": now,
                "expires_at": min(self._refresh_idle_expiry(now), family.expires_at)})
        issued = self._issue(family, client, code.scope, now, session, refresh=refresh)
        db.session.commit()
        return issued

    def issue_client_credentials(self, client: Client, scope: str, confirm_client=None) -> IssuedTokens:
        """No database write: the token's record in the shared store is all a revocation needs.

        `confirm_client(generation)`, when given, is called with the client generation read in the
        same round trip as the record, before the token is returned (see `_record`)."""
        now = utcnow()
        expires_at = _epoch(now) + self._settings.access_token_ttl
        jti, token = self._sign_access_token(
            client=client, subject=client.client_id, scope=scope, now=now, expires_at=expires_at, family=None
        )
        self._record(AccessTokenRecord(jti, client.client_id, None, None, None, scope), expires_at, confirm_client)
        return IssuedTokens(token, self._settings.access_token_ttl, scope, None, None, jti)

    def _record(self, record: AccessTokenRecord, expires_at: int, confirm_client) -> None:
        """The token's record in the shared store. A client authenticated from this process's copy is
        confirmed by the generation read in that same round trip: `confirm_client` raises when the
        copy is stale, and the token, recorded but never handed out, expires unused."""
        if confirm_client is None:
            self.access_tokens.record(record, expires_at)
        else:
            confirm_client(self.access_tokens.record(record, expires_at, also_read=GENERATION_KEY))

    def _access_token_expiry(self, now: datetime, session: BrowserSession | SimpleNamespace | None) -> int:
        """Never past the session's idle or absolute limit as it stands now, so a token cannot outlive
        its session even before the sweep ends it (the idle limit only moves later with use)."""
        ends = now + timedelta(seconds=self._settings.access_token_ttl)
        if session is not None:
            ends = min(ends, session.expires_at,
                       session.last_active_at + timedelta(seconds=self._settings.session_idle_ttl))
        return _epoch(ends)

    def _issue(self, family: SimpleNamespace, client: Client, scope: str, now,
               session: BrowserSession | SimpleNamespace | None, confirm_client=None,
               refresh: str | None = None) -> IssuedTokens:
        """Sign and record an access token of the grant; `refresh`, the refresh token to hand out
        beside it, is stored by the caller."""
        # `family` is the grant as the code exchange wrote it or as the refresh lookup found it;
        # `session`, the code's ORM row or the lookup's read-only copy.
        expires_at = self._access_token_expiry(now, session)
        jti, token = self._sign_access_token(
            client=client, subject=family.user_id, scope=scope, now=now, expires_at=expires_at, family=family
        )
        # Recorded before the caller commits: if the commit fails, the token never reaches the app.
        self._record(AccessTokenRecord(jti, client.client_id, family.user_id, family.session_id, family.id, scope),
                     expires_at, confirm_client)
        return IssuedTokens(token, max(0, expires_at - _epoch(now)), scope, family.id, refresh, jti)

    def _sign_access_token(self, *, client: Client, subject: str, scope: str, now, expires_at: int,
                           family: SimpleNamespace | None):
        """RFC 9068 JWT access token; its record in the shared store makes revocation immediate."""
        jti = new_jti(family.id if family is not None else None)
        claims = {
            "iss": self._settings.issuer,
            "sub": subject,
            "aud": self._settings.issuer,
            "client_id": client.client_id,
            "scope": scope,
            "jti": jti,
            "iat": _epoch(now),
            "exp": expires_at,
        }
        if family is not None:
            if family.session_id:
                claims["sid"] = family.session_id
            if family.auth_time:
                claims["auth_time"] = _epoch(family.auth_time)
            if family.acr:
                claims["acr"] = family.acr
        token = self._keys.ring().sign(claims, self._settings.default_signing_alg, typ=ACCESS_TOKEN_TYPE)
        return jti, token

    # -- refresh -----------------------------------------------------------------------------

    def find_refresh_token(self, token: str) -> FoundRefreshToken | None:
        if not _presentable(token):
            return None
        row = alone(_FIND_REFRESH_TOKEN, {"presented_hash": sha256_hex(token)})[1]
        return _found_refresh_token(row) if row is not None else None

    def refresh_token_usable(self, found: FoundRefreshToken, now=None) -> bool:
        """What _CONSUME_USABLE_REFRESH_TOKEN asks of a token, its client aside, for one already read."""
        now = now or utcnow()
        family = found.family
        return (
            found.token.used_at is None
            and found.token.expires_at > now
            and family.revoked_at is None
            and family.expires_at > now
            and (family.session_id is None or (found.session is not None and self._session_alive(found.session, now)))
        )

    def _session_alive(self, session: BrowserSession, now) -> bool:
        return session.ended_at is None and not past_limits(session, self._settings.session_idle_ttl, now)

    def _refresh_idle_expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self._settings.refresh_token_idle_ttl)

    def rotate_refresh_token(self, presented: str, client: Client, narrow_scope=None, touch_session=None,
                             confirm_client=None) -> IssuedTokens:
        """Consume the refresh token and issue a new pair; a reused token revokes its whole family.

        The token is consumed, and its successor stored, before anything is signed: on PostgreSQL in
        the same single statement that reads the grant. Whatever fails after that (the scope asked
        for, the client copy found stale, the shared store) puts the token back as it was, so a
        refused refresh leaves nothing used and the app's retry is not taken for a replay.
        `narrow_scope(granted)` returns the scope to issue or raises; `touch_session(session_id)`
        records the session's activity once the rotation has committed; `confirm_client` is called
        as for `issue_client_credentials`."""
        if not _presentable(presented):
            raise GrantError("invalid refresh token")
        presented_hash = sha256_hex(presented)
        successor = random_token(32)
        successor_hash = sha256_hex(successor)
        now = utcnow()
        found = self._consume(presented_hash, client.client_id, now, successor_hash)
        if found is None:
            self._refuse(presented_hash, client.client_id)
        family, session = found.family, found.session
        try:
            scope = narrow_scope(family.scope) if narrow_scope is not None else family.scope
            issued = self._issue(family, client, scope, now, session, confirm_client, refresh=successor)
        except Exception:
            self._release(presented_hash, successor_hash)
            raise
        # Only when the recorded activity is older than the touch interval: most refreshes write nothing more.
        if (touch_session is not None and session is not None
                and session.last_active_at < now - timedelta(seconds=self._settings.session_touch_interval)):
            touch_session(session.id)
        return issued

    def _consume(self, presented_hash: str, client_id: str, now, successor_hash: str) -> FoundRefreshToken | None:
        """Mark the presented token used and store its successor, atomically, when the token can be
        used by this client (see _CONSUME_USABLE_REFRESH_TOKEN); the token, its grant and session as
        they were read, or None when nothing was consumed."""
        params = {"presented_hash": presented_hash, "presenting_client": client_id, "now": now,
                  "idle_cutoff": now - timedelta(seconds=self._settings.session_idle_ttl)}
        successor_expiry = self._refresh_idle_expiry(now)
        if db.engine.dialect.name == "postgresql":
            row = alone(_ROTATE_REFRESH_TOKEN, {**params, "successor_hash": successor_hash,
                                                "successor_idle_expiry": successor_expiry})[1]
            return _found_refresh_token(row) if row is not None else None
        if not execute_core(_CONSUME_USABLE_REFRESH_TOKEN, params).rowcount:
            db.session.rollback()
            return None
        found = _found_refresh_token(execute_core(_FIND_REFRESH_TOKEN, params).mappings().one())
        execute_core(_INSERT_REFRESH_TOKEN, {"token_hash": successor_hash, "family_id": found.family.id,
                                             "created_at": now,
                                             "expires_at": min(successor_expiry, found.family.expires_at)})
        db.session.commit()
        return found

    def _refuse(self, presented_hash: str, client_id: str) -> NoReturn:
        """Why a presented token was not consumed; raises GrantError, and revokes the grant of a
        token that was used before, or by a concurrent request a moment ago: whoever holds it, the
        grant is compromised."""
        row = alone(_FIND_REFRESH_TOKEN, {"presented_hash": presented_hash})[1]
        found = _found_refresh_token(row) if row is not None else None
        if found is None or found.family.client_id != client_id:
            raise GrantError("unknown refresh token, or another client's")
        if found.token.used_at is None:
            raise GrantError("refresh token expired or revoked")
        self.revoke_family(found.family.id, "refresh_token_reused")
        db.session.commit()
        raise GrantError("refresh token already used", replay=True)

    @staticmethod
    def _release(presented_hash: str, successor_hash: str) -> None:
        """Undo a consumption whose new pair never left this process. Should this fail too, the token
        stays used and the app's next attempt revokes the grant: the app signs in again (fail closed)."""
        try:
            db.session.rollback()
            execute_core(_RELEASE_REFRESH_TOKEN, {"presented_hash": presented_hash})
            execute_core(_DROP_REFRESH_TOKEN, {"successor_hash": successor_hash})
            db.session.commit()
        except Exception:
            log.exception("a refresh token consumed by a failed rotation could not be put back")
            db.session.rollback()

    # -- revocation and validation --------------------------------------------------------

    def revoke_family(self, family_id: str, reason: str) -> None:
        now = utcnow()
        db.session.execute(
            update(TokenFamily)
            .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason)
        )
        # Written before the caller commits: should the commit fail, the tokens are dead anyway (fail closed).
        self.access_tokens.revoke_family(family_id)

    def revoke_access_token(self, jti: str) -> None:
        self.access_tokens.revoke(jti)

    def end_sessions(self, session_ids) -> None:
        """Every access token issued through these sessions stops working on every instance at once."""
        self.access_tokens.end_sessions(session_ids)

    def decode_access_token(self, token: str) -> dict | None:
        """Our signature, our issuer, the access-token type, not expired; None otherwise."""
        try:
            _, claims = self._keys.ring().verify(token, typ=ACCESS_TOKEN_TYPE)
        except InvalidJWT:
            return None
        now = _epoch(utcnow())
        exp = claims.get("exp")
        if claims.get("iss") != self._settings.issuer or not isinstance(exp, int) or exp <= now:
            return None
        if not isinstance(claims.get("jti"), str):
            return None
        return claims

    def active_access_token(self, token: str) -> ActiveAccessToken | None:
        """Valid and not revoked, its grant and session still standing, as every instance sees it."""
        claims = self.decode_access_token(token)
        return self.active_for_claims(claims) if claims is not None else None

    def active_for_claims(self, claims: dict) -> ActiveAccessToken | None:
        record = self.access_tokens.find(claims)
        if record is None:
            return None
        return ActiveAccessToken(record.jti, record.client_id, record.user_id, record.session_id, record.scope,
                                 claims)


def end_access_tokens_of_session(sender, session_id: str, batched: bool = False, **_) -> None:
    """Receiver of `session_ending`: the session's access tokens die with it, before the commit."""
    if not batched:  # sessions ended together are marked in one round trip by end_access_tokens_of_sessions
        from idp.services import services

        services().grants.end_sessions([session_id])


def end_access_tokens_of_sessions(sender, session_ids: list[str], **_) -> None:
    """Receiver of `sessions_ending`: one pipelined write for all of them."""
    from idp.services import services

    services().grants.end_sessions(session_ids)
