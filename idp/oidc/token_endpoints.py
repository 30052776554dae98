"""Token (RFC 6749 §3.2), revocation (RFC 7009), introspection (RFC 7662) and UserInfo (OIDC Core
§5.3), answered as plain WSGI before Flask is entered.

Relying apps and machines call these on every token, refresh and checked API call; a person never
sees them. They take a form post or a bearer token and answer JSON, so Flask's request and response
objects, routing and error pages gave them nothing but time: through Flask and Authlib a
client_credentials grant cost about twice what the same work costs as a plain WSGI function
(bench/README.md, the token floor). The rules they follow are all here: the form of RFC 6749 §3.1–3.2,
client authentication (§2.3, §3.2.1), the three grants with PKCE (RFC 7636, S256 only), and the error
answers of RFC 6749 §5.2 and RFC 6750 §3.1. Every request runs in an application context (3.6 µs),
so the services work as they do for a page.

A client is authenticated from this process's copy of its registration, which must be confirmed by
the client generation in the shared store before anything is answered (idp.services.clients). On the
hot grants that read comes with the round trip the request makes anyway: the access-token record
written by client_credentials and refresh, the revocation check of introspection. When the copy turns
out stale, the request runs again from the database: a token recorded meanwhile was never handed out,
and the refresh grant confirms the client before it consumes the presented token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote_plus

from sqlalchemy.exc import OperationalError

from idp.crypto.compact import b64url
from idp.crypto.secrets import constant_time_equal
from idp.domain.errors import DomainError
from idp.extensions import db
from idp.oidc.claims import id_token_claims, user_claims
from idp.services.clients import GENERATION_KEY, ClientSnapshot
from idp.services.grants import GrantError
from idp.storage.models import utcnow
from idp.web.headers import security_headers

log = logging.getLogger("idp.oidc")

TOKEN_PATH, REVOCATION_PATH, INTROSPECTION_PATH, USERINFO_PATH = "/token", "/revoke", "/introspect", "/userinfo"

BASIC, POST, NONE = "client_secret_basic", "client_secret_post", "none"
ANY_AUTH_METHOD = (BASIC, POST, NONE)
SECRET_AUTH_METHODS = (BASIC, POST)

FORM_TYPE = "application/x-www-form-urlencoded"
# As for the pages (MAX_CONTENT_LENGTH, MAX_FORM_PARTS): nothing these endpoints take comes near.
MAX_BODY_BYTES = 256 * 1024
MAX_FIELDS = 1000
# A parameter name echoed in an error_description must keep to its allowed characters (RFC 6749 §5.2).
_ECHOABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# RFC 7636 §4.1: 43 to 128 unreserved characters.
_CODE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
# Scopes that only make sense with a person behind the token.
USER_ONLY_SCOPES = frozenset({"openid", "offline_access", "profile", "email", "phone", "sessions"})
INVALID_ACCESS_TOKEN = "The access token is invalid, expired or revoked."


class OAuthError(Exception):
    """An error answer: RFC 6749 §5.2 JSON with its status and any challenge header."""

    def __init__(self, error: str, description: str, status: int = 400, headers: tuple = ()):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers


def client_authentication_failed() -> OAuthError:
    # RFC 6749 §5.2: 401 with a challenge for the scheme the client may use, whichever it tried.
    description = "Client authentication failed."
    challenge = f'Basic realm="idp", error="invalid_client", error_description="{description}"'
    return OAuthError("invalid_client", description, 401, (("WWW-Authenticate", challenge),))


class _TooLarge(Exception):
    pass


class StaleClientCopy(Exception):
    """The generation read while answering is not the one the client's copy was made under."""


@dataclass
class Caller:
    """The client a request authenticated as, and whether the store has confirmed the copy it came from."""

    client: ClientSnapshot
    method: str
    generation: str
    confirmed: bool

    def __call__(self, seen_generation: str | None) -> None:
        if self.confirmed:
            return
        if seen_generation != self.generation:
            raise StaleClientCopy()
        self.confirmed = True


class Call:
    """One request to these endpoints: its method, its form (parsed when asked) and its caller."""

    def __init__(self, environ):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.caller: Caller | None = None
        self._form: dict[str, str] | None = None

    @property
    def is_form(self) -> bool:
        return self.environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() == FORM_TYPE

    @property
    def authorization(self) -> str:
        return self.environ.get("HTTP_AUTHORIZATION", "")

    def form(self) -> dict[str, str]:
        """The body's parameters; RFC 6749 §3.1: none may appear twice."""
        if self._form is None:
            self._form = _parse_form(_read_body(self.environ))
        return self._form

    def strict_form(self) -> dict[str, str]:
        """RFC 6749 §3.2: the token, revocation and introspection endpoints take a form-encoded POST
        body and nothing in the URL."""
        if not self.is_form:
            raise OAuthError("invalid_request", "The request must be sent as application/x-www-form-urlencoded.")
        if parse_qsl(self.environ.get("QUERY_STRING", ""), keep_blank_values=True):
            raise OAuthError("invalid_request", "Parameters must be sent in the request body, not the URL.")
        return self.form()


def _read_body(environ) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            raise OAuthError("invalid_request", "The Content-Length header is not a number.") from None
        if size > MAX_BODY_BYTES:
            raise _TooLarge()
        return stream.read(size) if size > 0 else b""
    if environ.get("wsgi.input_terminated"):  # chunked: the server ends the stream
        body = stream.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise _TooLarge()
        return body
    return b""


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "The request body is not a valid form.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            named = f"The parameter '{name}'" if _ECHOABLE_NAME.fullmatch(name) else "A parameter"
            raise OAuthError("invalid_request", f"{named} appears more than once.")
        form[name] = value
    return form


def _basic_credentials(header: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`."""
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise client_authentication_failed() from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise client_authentication_failed()
    return unquote_plus(client_id), unquote_plus(secret)


def _token_body(issued) -> dict:
    body = {"access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in,
            "scope": issued.scope}
    if issued.refresh_token:
        body["refresh_token"] = issued.refresh_token
    return body


def _s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True)
class FoundToken:
    """An access or refresh token found by the revocation or introspection endpoint."""

    client_id: str | None
    active: bool
    info: dict
    revoke: object  # () -> None


class TokenEndpoints:
    """The WSGI app in front of Flask: these four paths here, everything else to `wsgi_app`."""

    def __init__(self, wsgi_app, flask_app, svc):
        self.wsgi_app = wsgi_app
        self._flask_app = flask_app
        self._svc = svc
        settings = svc.settings
        self._issuer = settings.issuer
        self._headers = [*security_headers(settings), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]
        self._routes = {
            TOKEN_PATH: (("POST",), self._token),
            REVOCATION_PATH: (("POST",), self._revocation),
            INTROSPECTION_PATH: (("POST",), self._introspection),
            USERINFO_PATH: (("GET", "HEAD", "POST"), self._userinfo),
        }
        self._grants = {
            "authorization_code": self._authorization_code,
            "refresh_token": self._refresh_token,
            "client_credentials": self._client_credentials,
        }

    # -- dispatch and answers ------------------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        route = self._routes.get(path)
        if route is None:
            return self.wsgi_app(environ, start_response)
        methods, handler = route
        call = Call(environ)
        cors = path == TOKEN_PATH and "HTTP_ORIGIN" in environ
        if call.method not in methods:
            allow = ", ".join(sorted({*methods, "OPTIONS"}))
            if call.method == "OPTIONS":
                return self._answer(start_response, 200, None, (("Allow", allow),), cors)
            body = {"error": "method_not_allowed", "error_description": "This address does not accept that kind of request."}
            return self._answer(start_response, 405, body, (("Allow", allow),), cors)
        try:
            with self._flask_app.app_context():
                status, body, headers = handler(call)
        except OAuthError as error:
            status, headers = error.status, error.headers
            body = {"error": error.error, "error_description": error.description} if error.error else {}
        except _TooLarge:
            status, body, headers = 413, {"error": "invalid_request",
                                          "error_description": "The request was larger than this server accepts."}, ()
        except DomainError as error:  # the shared store is down (StoreUnavailable), and the like
            log.info("domain error on %s %s: %s", call.method, path, error.detail)
            retry_after = getattr(error, "retry_after", None)
            status, body = error.status, {"error": error.code, "error_description": error.public}
            headers = (("Retry-After", str(retry_after)),) if retry_after else ()
        except OperationalError as error:
            # The database went away (restart, failover): transient; the transaction was rolled back.
            log.warning("database unreachable on %s %s: %s", call.method, path, error.orig)
            status, body = 503, {"error": "temporarily_unavailable",
                                 "error_description": "The service is temporarily unavailable. Please try again in a moment."}
            headers = (("Retry-After", "1"),)
        except Exception:
            log.exception("unhandled error on %s %s", call.method, path)
            status, body = 500, {"error": "server_error",
                                 "error_description": "Please try again. If it keeps happening, contact your administrator."}
            headers = ()
        if call.method == "HEAD":
            body = None
        return self._answer(start_response, status, body, headers, cors)

    def _answer(self, start_response, status: int, body: dict | None, headers, cors: bool):
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        response_headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                            *headers, *self._headers]
        if cors:
            # Browser apps redeem codes here (RFC 9700 §2.6 allows CORS on the token endpoint).
            response_headers.append(("Access-Control-Allow-Origin", "*"))
        start_response(f"{status} {HTTPStatus(status).phrase}", response_headers)
        return [data]

    # -- client authentication -----------------------------------------------------------------

    def _authenticate(self, call: Call, methods: tuple[str, ...], trust_copy: bool) -> Caller:
        """RFC 6749 §2.3: one method per request; a confidential client proves its secret (a keyed
        hash, compared in constant time), a public one only names itself and may use `none`."""
        form = call.form()
        header = call.authorization
        if header[:6].lower() == "basic ":
            client_id, secret = _basic_credentials(header)
            if "client_secret" in form:
                raise OAuthError("invalid_request", "Authenticate with one method only, not the header and the form.")
            if form.get("client_id") not in (None, client_id):
                raise client_authentication_failed()
            method = BASIC if secret else NONE
        elif form.get("client_secret"):
            client_id, secret, method = form.get("client_id"), form["client_secret"], POST
        else:
            client_id, secret, method = form.get("client_id"), None, NONE
        if not client_id or method not in methods:
            raise client_authentication_failed()
        caller = self._caller(client_id, method, trust_copy)
        call.caller = caller
        if caller is None:
            raise client_authentication_failed()
        client = caller.client
        if method == NONE:
            if not client.is_public:  # RFC 6749 §3.2.1: a confidential client must authenticate
                raise client_authentication_failed()
        elif client.is_public or client.token_endpoint_auth_method not in (None, method):
            raise client_authentication_failed()
        elif not self._svc.clients.check_secret(client, secret):
            raise client_authentication_failed()
        return caller

    def _caller(self, client_id: str, method: str, trust_copy: bool) -> Caller | None:
        clients = self._svc.clients
        if trust_copy:
            copy = clients.copy(client_id)
            if copy is not None:
                return Caller(copy[1], method, copy[0], confirmed=False)
        generation = clients.generation()
        client = clients.snapshot(client_id, generation)
        return Caller(client, method, generation, confirmed=True) if client is not None else None

    def _with_client_copies(self, handler, call: Call):
        """Run `handler(call, trust_copy=True)`; run it again from the database when the client copy
        it used is not the current one. An error answered from a copy is confirmed first, so a client
        changed a moment ago (a rotated secret, a new grant type) is not refused on old terms."""
        try:
            answer = handler(call, True)
            caller = call.caller
            if caller is not None and not caller.confirmed:
                caller(self._svc.clients.generation())
            return answer
        except StaleClientCopy:
            pass
        except OAuthError:
            caller = call.caller
            if caller is None or caller.confirmed or self._svc.clients.generation() == caller.generation:
                raise
        db.session.rollback()
        call.caller = None
        return handler(call, False)

    # -- POST /token -------------------------------------------------------------------------------

    def _token(self, call: Call):
        form = call.strict_form()
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "Missing 'grant_type'.")
        grant = self._grants.get(grant_type)
        if grant is None:
            raise OAuthError("unsupported_grant_type", "This grant type is not supported.")
        if grant_type == "authorization_code":
            # Not from a copy: redeeming a code commits at once (a code is burnt by any attempt).
            return grant(call, False)
        return self._with_client_copies(grant, call)

    def _client_for(self, grant_type: str, call: Call, methods: tuple[str, ...], trust_copy: bool) -> Caller:
        caller = self._authenticate(call, methods, trust_copy)
        if grant_type not in caller.client.grant_types:  # RFC 6749 §5.2, ASVS 10.4.4
            raise OAuthError("unauthorized_client", f"The client is not registered for the {grant_type} grant.")
        return caller

    def _authorization_code(self, call: Call, trust_copy: bool):
        caller = self._client_for("authorization_code", call, ANY_AUTH_METHOD, trust_copy)
        client, form, svc = caller.client, call.form(), self._svc
        code = form.get("code")
        if code is None:
            raise OAuthError("invalid_request", "Missing 'code'.")
        try:
            consumed = svc.grants.consume_code(code, client.client_id)
        except GrantError as error:
            log.info("code refused for %s: %s", client.client_id, error.reason)
            raise OAuthError("invalid_grant", "The code is invalid, expired or already used.") from None
        row = consumed.code
        if row.redirect_uri and form.get("redirect_uri") != row.redirect_uri:
            raise OAuthError("invalid_grant", "The redirect_uri is not the one of the authorization request.")
        self._check_code_verifier(row, form.get("code_verifier"), caller.method)
        user = svc.accounts.get(row.user_id)
        if not svc.accounts.can_sign_in(user):
            raise OAuthError("invalid_grant", "The account of this code can no longer sign in.")
        # The session learns of its app (for back-channel logout) in the transaction that issues the grant.
        svc.sessions.add_client(row.session_id, row.client_id)
        issued = svc.grants.issue_for_code(consumed, client, with_refresh="refresh_token" in client.grant_types)
        body = _token_body(issued)
        if "openid" in row.scope.split():
            body["id_token"] = self._id_token(row, client, issued.access_token)
        return 200, body, ()

    @staticmethod
    def _check_code_verifier(code, verifier: str | None, method: str) -> None:
        """RFC 7636 §4.6 with S256 only; a public client always needs PKCE, and a code issued without
        a challenge refuses any verifier (RFC 9700 §4.8.2, PKCE downgrade)."""
        if not code.code_challenge:
            if verifier is not None or method == NONE:
                raise OAuthError("invalid_request", "The authorization request had no code_challenge.")
            return
        if not verifier:
            raise OAuthError("invalid_request", "Missing 'code_verifier'.")
        if not _CODE_VERIFIER.fullmatch(verifier):
            raise OAuthError("invalid_request", "The code_verifier must be 43 to 128 unreserved characters.")
        if (code.code_challenge_method or "S256") != "S256" or not constant_time_equal(_s256(verifier),
                                                                                        code.code_challenge):
            raise OAuthError("invalid_grant", "The code_verifier does not match the code_challenge.")

    def _id_token(self, code, client: ClientSnapshot, access_token: str) -> str:
        svc = self._svc
        alg = client.id_token_signed_response_alg
        claims = id_token_claims(
            issuer=self._issuer,
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

    def _refresh_token(self, call: Call, trust_copy: bool):
        caller = self._client_for("refresh_token", call, ANY_AUTH_METHOD, trust_copy)
        client, form, svc = caller.client, call.form(), self._svc
        presented = form.get("refresh_token")
        if not presented:
            raise OAuthError("invalid_request", "Missing 'refresh_token'.")
        requested = form.get("scope")

        def narrowed(granted: str) -> str:
            if requested is None:
                return granted
            # RFC 6749 §6: the scope may only shrink.
            if not requested.split() or not set(requested.split()) <= set(granted.split()):
                raise OAuthError("invalid_scope", "The requested scope exceeds what was granted.")
            return " ".join(dict.fromkeys(requested.split()))

        try:
            issued = svc.grants.rotate_refresh_token(presented, client, narrowed,
                                                     touch_session=svc.sessions.touch_by_id, confirm_client=caller)
        except GrantError as error:
            log.info("refresh refused for %s: %s", client.client_id, error.reason)
            raise OAuthError("invalid_grant", "The refresh token is invalid.") from None
        return 200, _token_body(issued), ()

    def _client_credentials(self, call: Call, trust_copy: bool):
        caller = self._client_for("client_credentials", call, SECRET_AUTH_METHODS, trust_copy)
        client = caller.client
        requested = call.form().get("scope")
        allowed = set(client.scope.split()) - USER_ONLY_SCOPES
        if requested is not None and not set(requested.split()) <= allowed:
            raise OAuthError("invalid_scope", "The requested scope is not allowed for this client.")
        scope = " ".join(dict.fromkeys(requested.split())) if requested else " ".join(sorted(allowed))
        issued = self._svc.grants.issue_client_credentials(client, scope, confirm_client=caller)
        return 200, _token_body(issued), ()

    # -- POST /revoke and /introspect ----------------------------------------------------------------

    def _revocation(self, call: Call):
        """RFC 7009: 200 whatever the token (unknown, expired, garbage); another client's is refused."""
        form = call.strict_form()
        caller = self._authenticate(call, ANY_AUTH_METHOD, trust_copy=False)
        if "token" not in form:
            raise OAuthError("invalid_request", "Missing 'token'.")
        found = self._find_token(form["token"], form.get("token_type_hint"), caller)
        if found is not None:
            if found.client_id != caller.client.client_id:
                raise OAuthError("invalid_grant", "The token was not issued to this client.")
            found.revoke()
            db.session.commit()
        return 200, {}, ()

    def _introspection(self, call: Call):
        call.strict_form()
        return self._with_client_copies(self._introspect, call)

    def _introspect(self, call: Call, trust_copy: bool):
        """RFC 7662: only authenticated confidential clients, and each sees only its own tokens; any
        other token is exactly `{"active": false}`."""
        caller = self._authenticate(call, SECRET_AUTH_METHODS, trust_copy)
        form = call.form()
        if "token" not in form:
            raise OAuthError("invalid_request", "Missing 'token'.")
        found = self._find_token(form["token"], form.get("token_type_hint"), caller)
        if found is None or not found.active or found.client_id != caller.client.client_id:
            return 200, {"active": False}, ()
        return 200, {"active": True, **found.info}, ()

    def _find_token(self, token: str, hint: str | None, caller: Caller) -> FoundToken | None:
        """RFC 7009 §2.1, RFC 7662 §2.1: the hint only orders the lookups (an unknown one is ignored)."""
        lookups = [self._find_access_token, self._find_refresh_token]
        if hint == "refresh_token":
            lookups.reverse()
        for lookup in lookups:
            found = lookup(token, caller)
            if found is not None:
                return found
        return None

    def _find_access_token(self, token: str, caller: Caller) -> FoundToken | None:
        grants = self._svc.grants
        claims = grants.decode_access_token(token)
        if claims is None:
            return None
        record, [generation] = grants.access_tokens.find_and_read(claims, GENERATION_KEY)
        caller(generation)
        info = {
            "scope": claims.get("scope", ""),
            "client_id": claims.get("client_id"),
            "token_type": "Bearer",
            "exp": claims["exp"],
            "iat": claims.get("iat"),
            "sub": claims.get("sub"),
            "iss": self._issuer,
            "aud": self._issuer,
            "jti": claims["jti"],
        }
        if claims.get("sid"):
            info["sid"] = claims["sid"]
        return FoundToken(claims.get("client_id"), record is not None, info,
                          lambda: grants.revoke_access_token(claims["jti"]))

    def _find_refresh_token(self, token: str, caller: Caller) -> FoundToken | None:
        grants = self._svc.grants
        found = grants.find_refresh_token(token)
        if found is None:
            return None
        rt, family = found.token, found.family
        info = {
            "scope": family.scope,
            "client_id": family.client_id,
            "token_type": "refresh_token",
            "exp": int(rt.expires_at.timestamp()),
            "iat": int(rt.created_at.timestamp()),
            "sub": family.user_id,
            "iss": self._issuer,
        }
        if family.session_id:
            info["sid"] = family.session_id
        # RFC 7009 §2.1: revoking a refresh token also revokes the access tokens of the same grant.
        return FoundToken(family.client_id, grants.refresh_token_usable(found), info,
                          lambda: grants.revoke_family(family.id, "revoked_by_client"))

    # -- GET|POST /userinfo ----------------------------------------------------------------------------

    def _userinfo(self, call: Call):
        token = self._bearer_token(call)
        if not token:
            raise _bearer_challenge()
        svc = self._svc
        claims = svc.grants.decode_access_token(token)
        user_id = claims.get("sub") if claims is not None else None
        if not isinstance(user_id, str):
            raise _bearer_challenge("invalid_token", INVALID_ACCESS_TOKEN)
        # One round trip: the token's revocation state, and the profile's copy with its versions.
        record, fetched = svc.grants.access_tokens.find_and_read(claims, *svc.profiles.keys(user_id))
        if record is None or record.user_id != user_id:  # no person behind a client_credentials token
            raise _bearer_challenge("invalid_token", INVALID_ACCESS_TOKEN)
        scopes = set(record.scope.split())
        if "openid" not in scopes:
            raise _bearer_challenge("insufficient_scope", "The token was not issued for OpenID Connect.", 403)
        user = svc.profiles.profile(user_id, fetched)
        if not svc.accounts.can_sign_in(user):
            raise _bearer_challenge("invalid_token", INVALID_ACCESS_TOKEN)
        return 200, user_claims(user, scopes), ()

    @staticmethod
    def _bearer_token(call: Call) -> str | None:
        """RFC 6750 §2: the Authorization header, or the form body of a POST; never both."""
        header = call.authorization
        from_header = header[7:].strip() if header[:7].lower() == "bearer " else None
        from_body = call.form().get("access_token") if call.method == "POST" and call.is_form else None
        if from_header and from_body:
            raise _bearer_challenge("invalid_request", "Send the access token in one place only.", 400)
        return from_header or from_body


def _bearer_challenge(error: str | None = None, description: str | None = None, status: int = 401) -> OAuthError:
    """RFC 6750 §3: without a token, a bare challenge and no error code."""
    challenge = 'Bearer realm="idp"'
    if error:
        challenge += f', error="{error}", error_description="{description}"'
    return OAuthError(error or "", description or "", status, (("WWW-Authenticate", challenge),))
