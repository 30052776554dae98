"""A small relying app for idp: sign-in with the authorization code flow + PKCE, RP-initiated
logout, and OpenID Connect Back-Channel Logout 1.0.

Run with `python examples/relying_app/app.py`; configuration comes from the environment (see
README.md next to this file). Everything is kept in memory: this is an example, not a template for
a production session store.
"""

from __future__ import annotations

import os
import secrets
import threading
import time

from authlib.integrations.flask_client import OAuth, OAuthError
from flask import Flask, jsonify, redirect, render_template_string, request, session
from flask.sessions import SessionInterface, SessionMixin
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from werkzeug.datastructures import CallbackDict

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Clock skew tolerated on iat/exp, and how old a logout token may be (CONFORMANCE A4-3: a day).
LEEWAY_SECONDS = 30
MAX_TOKEN_AGE = 24 * 3600
# An unknown kid makes us re-read the JWKS (key rotation), but not more often than this.
JWKS_REFRESH_INTERVAL = 30

PORT = int(os.environ.get("PORT", "8000"))
ISSUER = os.environ["IDP_ISSUER"].rstrip("/")
CLIENT_ID = os.environ["CLIENT_ID"]
CLIENT_SECRET = os.environ.get("CLIENT_SECRET") or None
APP_BASE_URL = os.environ.get("APP_BASE_URL", f"http://127.0.0.1:{PORT}").rstrip("/")
SCOPE = os.environ.get("SCOPE", "openid profile email")
COOKIE_NAME = "relying_app_session"  # not "session": the IdP on the same host must not share it


class AppSessions:
    """Server-side sessions of this app, indexed by the IdP's `sid` for back-channel logout."""

    def __init__(self):
        self._lock = threading.Lock()
        self._data: dict[str, dict] = {}
        self._by_sid: dict[str, set[str]] = {}
        # Keys of ended sessions: a request that was already running must not bring one back.
        self._ended: set[str] = set()
        # IdP sessions we heard have ended: a login that completes afterwards is refused.
        self.ended_sids: set[str] = set()

    def load(self, key: str) -> dict | None:
        with self._lock:
            data = self._data.get(key)
            return dict(data) if data is not None else None

    def save(self, key: str, data: dict) -> bool:
        with self._lock:
            if key in self._ended:
                return False
            self._unindex(key)
            self._data[key] = dict(data)
            sid = data.get("claims", {}).get("sid")
            if sid:
                self._by_sid.setdefault(sid, set()).add(key)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._unindex(key)
            self._data.pop(key, None)
            self._ended.add(key)

    def end_for(self, sid: str | None, sub: str | None) -> int:
        """End every local session of the IdP session `sid` (or, without one, of the user `sub`)."""
        with self._lock:
            if sid:
                self.ended_sids.add(sid)
                keys = set(self._by_sid.get(sid, ()))
            else:
                keys = {k for k, d in self._data.items() if d.get("claims", {}).get("sub") == sub}
            for key in keys:
                self._unindex(key)
                self._data.pop(key, None)
                self._ended.add(key)
            return len(keys)

    def _unindex(self, key: str) -> None:
        sid = self._data.get(key, {}).get("claims", {}).get("sid")
        if sid and sid in self._by_sid:
            self._by_sid[sid].discard(key)
            if not self._by_sid[sid]:
                del self._by_sid[sid]


class ServerSession(CallbackDict, SessionMixin):
    def __init__(self, initial=None, key: str | None = None):
        def on_update(_):
            self.modified = True

        super().__init__(initial, on_update)
        self.new = key is None
        self.key = key or secrets.token_urlsafe(32)
        self.replaced_key: str | None = None
        self.modified = False

    def regenerate(self) -> None:
        """A new key at sign-in, so a key planted before it is worth nothing (no fixation)."""
        self.replaced_key, self.key, self.new, self.modified = self.key, secrets.token_urlsafe(32), True, True


class ServerSessionInterface(SessionInterface):
    """The cookie holds only a random key; the session itself stays in `AppSessions`."""

    def __init__(self, store: AppSessions):
        self.store = store

    def open_session(self, app, request):
        key = request.cookies.get(COOKIE_NAME)
        data = self.store.load(key) if key else None
        return ServerSession(data, key) if data is not None else ServerSession()

    def save_session(self, app, session, response):
        secure = APP_BASE_URL.startswith("https://")
        if session.replaced_key:
            self.store.delete(session.replaced_key)
        if not session:
            if not session.new:
                self.store.delete(session.key)
                response.delete_cookie(COOKIE_NAME, path="/", secure=secure, httponly=True, samesite="Lax")
            return
        if (session.modified or session.new) and self.store.save(session.key, dict(session)) and session.new:
            response.set_cookie(COOKIE_NAME, session.key, path="/", secure=secure, httponly=True, samesite="Lax")


sessions = AppSessions()
app = Flask(__name__)
app.session_interface = ServerSessionInterface(sessions)

oauth = OAuth(app)
oauth.register(
    "idp",
    client_id=CLIENT_ID,
    client_secret=CLIENT_SECRET,
    server_metadata_url=f"{ISSUER}/.well-known/openid-configuration",
    client_kwargs={
        "scope": SCOPE,
        "code_challenge_method": "S256",
        "token_endpoint_auth_method": "client_secret_basic" if CLIENT_SECRET else "none",
    },
)

# For tests and demos only: the verified claims of every logout token received (GET /_received).
received: list[dict] = []
_seen_jti: dict[str, float] = {}  # jti -> when it may be forgotten
_jti_lock = threading.Lock()
_jwks_refreshed_at = 0.0


HOME = """<!doctype html>
<title>Example relying app</title>
{% if claims %}
  <p>Signed in as {{ profile.get("name") or profile.get("email") or claims["sub"] }}</p>
  <h2>ID token claims</h2>
  <pre id="claims">{{ claims | tojson(indent=2) }}</pre>
  <p><a href="/logout">Sign out</a></p>
{% else %}
  <p>{{ message or "Not signed in." }}</p>
  <p><a href="/login">Sign in</a></p>
{% endif %}
"""


@app.get("/")
def home():
    message = None
    if "state" in request.args:  # back from RP-initiated logout
        try:
            oauth.idp.validate_logout_response()
            message = "You have signed out."
        except OAuthError:
            message = "Not signed in."
    return render_template_string(HOME, claims=session.get("claims"), profile=session.get("profile") or {},
                                  message=message)


@app.get("/login")
def login():
    return oauth.idp.authorize_redirect(f"{APP_BASE_URL}/callback")


@app.get("/callback")
def callback():
    try:
        token = oauth.idp.authorize_access_token()
    except OAuthError as exc:
        return render_template_string("<p>Sign-in failed: {{ e }}</p>", e=exc.description or exc.error), 400
    if "userinfo" not in token:  # SCOPE without openid: no ID token, so no sid to be logged out by
        return render_template_string("<p>Sign-in failed: the IdP sent no ID token.</p>"), 400
    claims = dict(token["userinfo"])  # the ID token, verified by Authlib (signature, iss, aud, nonce, …)
    if claims.get("sid") in sessions.ended_sids:
        return render_template_string("<p>That sign-in has already ended.</p>"), 400
    # ID tokens from idp carry protocol claims only; the name and email come from UserInfo.
    try:
        profile = dict(oauth.idp.userinfo(token=token))
    except Exception as exc:  # requests' HTTPError, a network error: sign in without a display name
        app.logger.warning("UserInfo failed: %s", exc)
        profile = {}
    if profile.get("sub") != claims["sub"]:
        profile = {}  # OIDC Core §5.3.2: a UserInfo answer about someone else is not used
    session.clear()
    session.regenerate()
    session["claims"] = claims
    session["profile"] = profile
    session["id_token"] = token["id_token"]
    session["token"] = {k: token.get(k) for k in ("access_token", "refresh_token", "expires_at")}
    return redirect("/")


@app.get("/logout")
def logout():
    id_token = session.get("id_token")
    session.clear()
    if not id_token:
        return redirect("/")
    return oauth.idp.logout_redirect(post_logout_redirect_uri=f"{APP_BASE_URL}/", id_token_hint=id_token)


class LogoutTokenError(Exception):
    pass


def _key_set(force: bool = False) -> KeySet:
    global _jwks_refreshed_at
    if force:
        if time.monotonic() - _jwks_refreshed_at < JWKS_REFRESH_INTERVAL:
            raise LogoutTokenError("unknown signing key")
        _jwks_refreshed_at = time.monotonic()
    return KeySet.import_key_set(oauth.idp.fetch_jwk_set(force=force))


def verify_logout_token(value: str) -> dict:
    """OIDC Back-Channel Logout 1.0 §2.6."""
    metadata = oauth.idp.load_server_metadata()
    algorithms = [a for a in metadata.get("id_token_signing_alg_values_supported", []) if a != "none"]
    try:
        try:
            token = jwt.decode(value, _key_set(), algorithms=algorithms)
        except InvalidKeyIdError:
            token = jwt.decode(value, _key_set(force=True), algorithms=algorithms)
        typ = str(token.header.get("typ", "logout+jwt")).lower()
        if typ not in ("logout+jwt", "application/logout+jwt"):
            raise LogoutTokenError("typ is not logout+jwt")
        jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": metadata["issuer"]},
            aud={"essential": True, "value": CLIENT_ID},
            iat={"essential": True},
            jti={"essential": True},
        ).validate(token.claims)
    except (JoseError, ValueError) as exc:
        raise LogoutTokenError(getattr(exc, "description", None) or str(exc) or type(exc).__name__) from None
    claims = token.claims
    if claims["iat"] < time.time() - MAX_TOKEN_AGE:
        raise LogoutTokenError("the token is too old")
    if claims.get("events") != {LOGOUT_EVENT: {}}:
        raise LogoutTokenError("events must be exactly the back-channel logout event")
    if "nonce" in claims:
        raise LogoutTokenError("a logout token must not carry a nonce")
    if not any(isinstance(claims.get(name), str) and claims[name] for name in ("sid", "sub")):
        raise LogoutTokenError("neither sid nor sub")
    return claims


def _first_use_of(jti: str) -> bool:
    now = time.time()
    with _jti_lock:
        for old in [j for j, until in _seen_jti.items() if until < now]:
            del _seen_jti[old]  # older than MAX_TOKEN_AGE: refused on age anyway
        if jti in _seen_jti:
            return False
        _seen_jti[jti] = now + MAX_TOKEN_AGE + LEEWAY_SECONDS
        return True


def _logout_error(description: str):
    response = jsonify({"error": "invalid_request", "error_description": description})
    response.status_code = 400
    response.headers["Cache-Control"] = "no-store"
    return response


@app.post("/backchannel-logout")
def backchannel_logout():
    value = request.form.get("logout_token")
    if not value:
        return _logout_error("logout_token is missing")
    try:
        claims = verify_logout_token(value)
    except LogoutTokenError as exc:
        app.logger.warning("refused a logout token: %s", exc)
        return _logout_error(f"invalid logout token: {exc}")
    if not _first_use_of(claims["jti"]):
        return _logout_error("this logout token was already used (jti replay)")
    ended = sessions.end_for(claims.get("sid"), claims.get("sub"))
    app.logger.info("back-channel logout for sid=%s sub=%s ended %d session(s)",
                    claims.get("sid"), claims.get("sub"), ended)
    received.append(claims)
    response = app.response_class(status=200)
    response.headers["Cache-Control"] = "no-store"
    return response


@app.get("/_received")
def received_tokens():
    """For tests and demos: the verified claims of the logout tokens this process received."""
    return jsonify(received)


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=PORT, threaded=True)
