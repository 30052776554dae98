"""Authlib's authorization server, tightened: S256-only PKCE, 401 for every client-auth failure,
atomic code and refresh-token consumption with replay revocation, JWT access tokens."""

from __future__ import annotations

import logging

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    ClientAuthentication,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
    grants,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from idp.extensions import db
from idp.oidc.claims import id_token_claims
from idp.oidc.client import OAuthClient
from idp.services import services
from idp.services.grants import GrantError
from idp.storage.models import utcnow

log = logging.getLogger("idp.oidc")

ALL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
SECRET_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class StrictClientAuthentication(ClientAuthentication):
    """RFC 6749 §5.2: a failed client authentication is 401 invalid_client with a challenge, always."""

    def authenticate(self, request, methods, endpoint):
        try:
            return super().authenticate(request, methods, endpoint)
        except InvalidClientError as error:
            raise InvalidClientError(status_code=401, description="Client authentication failed.") from error


class S256Challenge(CodeChallenge):
    """PKCE with S256 only: `plain` adds nothing over no PKCE (RFC 9700 §2.1.1)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]


class CodeRecord:
    """An authorization-code row seen through Authlib's interface."""

    def __init__(self, consumed):
        self.consumed = consumed
        self.row = row = consumed.code
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self):
        return self.row.redirect_uri

    def get_scope(self):
        return self.row.scope


def _token_body(issued) -> dict:
    token = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    if issued.refresh_token:
        token["refresh_token"] = issued.refresh_token
    return token


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    def query_authorization_code(self, code, client):
        try:
            return CodeRecord(services().grants.consume_code(code, client.client_id))
        except GrantError as error:
            log.info("code refused for %s: %s", client.client_id, error.reason)
            return None

    def delete_authorization_code(self, authorization_code):
        """Already consumed atomically in query_authorization_code."""

    def authenticate_user(self, authorization_code):
        user = services().accounts.get(authorization_code.row.user_id)
        return user if services().accounts.can_sign_in(user) else None

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        svc = services()
        consumed = self.request.authorization_code.consumed
        # The session learns of its app (for back-channel logout) in the transaction that issues the grant.
        svc.sessions.add_client(consumed.code.session_id, consumed.code.client_id)
        issued = svc.grants.issue_for_code(consumed, self.request.client.row, with_refresh=include_refresh_token)
        return _token_body(issued)

    def save_token(self, token):
        """Persisted by generate_token in the same transaction as the grant."""

    def create_token_response(self):
        status, token, headers = super().create_token_response()
        code = self.request.authorization_code.row
        if "openid" in code.scope.split():
            token["id_token"] = self._id_token(code, token["access_token"])
        return status, token, headers

    def _id_token(self, code, access_token: str) -> str:
        svc = services()
        client = self.request.client.row
        alg = client.id_token_signed_response_alg
        claims = id_token_claims(
            issuer=svc.settings.issuer,
            client_id=client.client_id,
            user_id=code.user_id,
            now=int(utcnow().timestamp()),
            ttl=svc.settings.id_token_ttl,
            auth_time=int(code.auth_time.timestamp()),
            nonce=code.nonce,
            acr=code.acr,
            amr=code.amr,
            sid=code.session_id,
            access_token=access_token,
            alg=alg,
        )
        return svc.keys.ring().sign(claims, alg)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("The client may not use refresh tokens.")
        refresh_token = self.request.form.get("refresh_token")
        if not refresh_token:
            raise InvalidRequestError("Missing 'refresh_token' in request.")
        found = services().grants.find_refresh_token(refresh_token)
        if found is None or found.family.client_id != client.client_id:
            raise InvalidGrantError("The refresh token is invalid.")
        requested = self.request.form.get("scope")
        if requested is not None:
            granted = set(found.family.scope.split())
            if not requested.split() or not set(requested.split()) <= granted:
                raise InvalidScopeError("The requested scope exceeds what was granted.")
        self.request.client = client
        self.request.refresh_token_found = found

    def create_token_response(self):
        svc = services()
        client = self.request.client
        requested = self.request.form.get("scope")
        scope = " ".join(dict.fromkeys(requested.split())) if requested else None
        try:
            issued = svc.grants.rotate_refresh_token(self.request.refresh_token_found, client.row, scope,
                                                     touch_session=svc.sessions.touch_by_id)
        except GrantError as error:
            log.info("refresh refused for %s: %s", client.client_id, error.reason)
            raise InvalidGrantError("The refresh token is invalid.") from error
        return 200, _token_body(issued), self.TOKEN_RESPONSE_HEADER


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_AUTH_METHODS
    # Scopes that only make sense with a person behind the token.
    USER_ONLY_SCOPES = {"openid", "offline_access", "profile", "email", "phone", "sessions"}

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("The client may not use client_credentials.")
        requested = self.request.form.get("scope")
        allowed = set(client.row.scope.split()) - self.USER_ONLY_SCOPES
        if requested is not None and not set(requested.split()) <= allowed:
            raise InvalidScopeError("The requested scope is not allowed for this client.")
        self.request.client = client
        self.request.cc_scope = " ".join(dict.fromkeys(requested.split())) if requested else " ".join(sorted(allowed))

    def create_token_response(self):
        issued = services().grants.issue_client_credentials(self.request.client.row, self.request.cc_scope)
        return 200, _token_body(issued), self.TOKEN_RESPONSE_HEADER


class TokenRef:
    """An access or refresh token found by the revocation or introspection endpoint."""

    def __init__(self, kind: str, client_id: str, active: bool, info: dict, revoke):
        self.kind = kind
        self.client_id = client_id
        self.active = active
        self.info = info
        self.revoke = revoke

    def check_client(self, client):
        return client.client_id == self.client_id

    def is_expired(self):
        return not self.active

    def is_revoked(self):
        return not self.active


def find_token(token: str, hint: str | None) -> TokenRef | None:
    svc = services()
    lookups = [_find_access_token, _find_refresh_token]
    if hint == "refresh_token":
        lookups.reverse()
    for lookup in lookups:
        found = lookup(svc, token)
        if found is not None:
            return found
    return None


def _find_access_token(svc, token: str) -> TokenRef | None:
    claims = svc.grants.decode_access_token(token)
    if claims is None:
        return None
    active = svc.grants.active_for_claims(claims) is not None
    info = {
        "scope": claims.get("scope", ""),
        "client_id": claims.get("client_id"),
        "token_type": "Bearer",
        "exp": claims["exp"],
        "iat": claims.get("iat"),
        "sub": claims.get("sub"),
        "iss": svc.settings.issuer,
        "aud": svc.settings.issuer,
        "jti": claims["jti"],
    }
    if claims.get("sid"):
        info["sid"] = claims["sid"]

    def revoke():
        svc.grants.revoke_access_token(claims["jti"])

    return TokenRef("access_token", claims.get("client_id"), active, info, revoke)


def _find_refresh_token(svc, token: str) -> TokenRef | None:
    found = svc.grants.find_refresh_token(token)
    if found is None:
        return None
    rt, family = found.token, found.family
    active = svc.grants.refresh_token_usable(found)
    info = {
        "scope": family.scope,
        "client_id": family.client_id,
        "token_type": "refresh_token",
        "exp": int(rt.expires_at.timestamp()),
        "iat": int(rt.created_at.timestamp()),
        "sub": family.user_id,
        "iss": svc.settings.issuer,
    }
    if family.session_id:
        info["sid"] = family.session_id

    def revoke():
        # RFC 7009 §2.1: revoking a refresh token also revokes the access tokens of the same grant.
        svc.grants.revoke_family(family.id, "revoked_by_client")

    return TokenRef("refresh_token", family.client_id, active, info, revoke)


class IgnoreUnknownHint:
    """RFC 7009 §2.1 and RFC 7662 §2.1: the hint only orders the lookup and may be ignored. Authlib
    answers an unknown hint with 401 unsupported_token_type, a status reserved for client auth."""

    def check_params(self, request, client):
        if "token" not in request.form:
            raise InvalidRequestError("Missing 'token'.")


class Revocation(IgnoreUnknownHint, RevocationEndpoint):
    CLIENT_AUTH_METHODS = ALL_AUTH_METHODS

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def revoke_token(self, token, request):
        token.revoke()
        db.session.commit()


class Introspection(IgnoreUnknownHint, IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = SECRET_AUTH_METHODS

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def check_permission(self, token, client, request):
        # A client sees only tokens issued to it; anything else is reported as inactive.
        return token.client_id == client.client_id

    def introspect_token(self, token):
        return {"active": True, **token.info}


def create_server(app) -> AuthorizationServer:
    def query_client(client_id):
        svc = services()
        client = svc.clients.snapshot(client_id)
        return OAuthClient(client, svc.clients.check_secret) if client else None

    server = AuthorizationServer(app, query_client=query_client, save_token=lambda token, request: None)
    server._client_auth = StrictClientAuthentication(query_client)
    server.register_grant(AuthorizationCodeGrant, [S256Challenge(required=True)])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)
    return server
