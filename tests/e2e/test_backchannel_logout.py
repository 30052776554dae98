"""Back-channel logout end to end: two `idp serve` instances on one PostgreSQL + Redis, and the
example relying app (examples/relying_app) as a live process that verifies logout tokens itself."""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg.rows import dict_row
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.e2e.conftest import free_port, sign_in_form

pytestmark = pytest.mark.e2e

EMAIL = "owner@example.com"
PASSWORD = "a long and memorable passphrase"
RELYING_APP = Path(__file__).resolve().parents[2] / "examples" / "relying_app" / "app.py"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# The outbox backs off 1, 2, 4, 8 … s (±20 %); the RP is down for well under 10 s here.
DELIVERY_DEADLINE = 60


class RelyingApp:
    """`python examples/relying_app/app.py` as a process; start and stop it as often as needed."""

    def __init__(self, tmp_path: Path, issuer: str, client: dict, port: int):
        self.tmp_path = tmp_path
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "IDP_ISSUER": issuer, "CLIENT_ID": client["client_id"],
                    "CLIENT_SECRET": client["client_secret"], "APP_BASE_URL": self.base, "PORT": str(port),
                    "SCOPE": "openid profile email"}
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.tmp_path / f"relying-app-{self.starts}.log", "w")
        self.process = subprocess.Popen([sys.executable, str(RELYING_APP)], env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(self.log())
            try:
                if requests.get(self.base + "/_received", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("the relying app did not come up within 15 s\n" + self.log())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None

    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp_path.glob("relying-app-*.log")))

    def received(self) -> list[dict]:
        response = requests.get(self.base + "/_received", timeout=5)
        assert response.status_code == 200
        return response.json()

    def wait_for_received(self, count: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= count:
                return got
            time.sleep(0.2)
        raise AssertionError(f"the relying app got {len(self.received())} logout token(s), expected {count}"
                             f"\n{self.log()}")


@pytest.fixture
def relying_apps():
    started: list[RelyingApp] = []

    def make(*args) -> RelyingApp:
        started.append(RelyingApp(*args))
        return started[-1]

    try:
        yield make
    finally:
        for rp in started:
            rp.stop()


def _setup(deployment, rp_port: int) -> dict:
    deployment.cli("init")
    rp_base = f"http://127.0.0.1:{rp_port}"
    commands = {
        "user": ("users", "create", "--email", EMAIL, "--password", PASSWORD, "--name", "Site Owner"),
        "rp": ("clients", "create", "--name", "Example relying app", "--first-party",
               "--redirect-uri", f"{rp_base}/callback", "--post-logout-redirect-uri", f"{rp_base}/",
               "--backchannel-logout-uri", f"{rp_base}/backchannel-logout",
               "--scope", "openid profile email offline_access"),
        "admin": ("clients", "create", "--name", "Operations console", "--grant-type", "client_credentials",
                  "--scope", "admin"),
    }
    with ThreadPoolExecutor(len(commands)) as pool:  # each command builds the app: seconds apiece
        done = {name: pool.submit(deployment.cli, *args) for name, args in commands.items()}
        return {name: future.result() for name, future in done.items()}


def _start_instances(deployment, ports: list[int]) -> list[str]:
    """Every instance shares the deployment's env, so the issuer is the first one's URL for all."""
    with ThreadPoolExecutor(len(ports)) as pool:
        return list(pool.map(lambda port: deployment.start(port=port, workers=2), ports))


def _sign_in_through_app(rp: RelyingApp) -> tuple[requests.Session, dict]:
    """A browser opens the app's /login, signs in on the hosted page and lands on the app's home."""
    browser = requests.Session()
    login_page = browser.get(rp.base + "/login", timeout=10)
    assert login_page.status_code == 200 and "/login" in urlsplit(login_page.url).path
    home = browser.post(login_page.url.split("?")[0], data=sign_in_form(login_page.text, EMAIL, PASSWORD),
                        timeout=10)
    assert home.status_code == 200 and home.url == rp.base + "/", (home.url, home.text[:300])
    assert "Signed in as Site Owner" in home.text
    return browser, _app_claims(browser, rp)


def _app_claims(browser: requests.Session, rp: RelyingApp) -> dict | None:
    page = browser.get(rp.base + "/", timeout=5)
    assert page.status_code == 200
    found = re.search(r'<pre id="claims">(.*?)</pre>', page.text, re.S)
    return json.loads(html.unescape(found.group(1))) if found else None


def _sso_tokens(browser: requests.Session, metadata: dict, client: dict, rp: RelyingApp) -> dict:
    """Tokens of our own for the same IdP session: the browser's session cookie signs in silently."""
    oauth = OAuth2Session(client["client_id"], client["client_secret"], scope="openid offline_access",
                          redirect_uri=rp.base + "/callback", code_challenge_method="S256")
    verifier = secrets.token_urlsafe(48)
    url, _ = oauth.create_authorization_url(metadata["authorization_endpoint"], code_verifier=verifier,
                                            prompt="none")
    response = browser.get(url, allow_redirects=False, timeout=10)
    assert response.status_code in (302, 303), response.text[:300]
    callback = response.headers["Location"]
    assert callback.startswith(rp.base + "/callback?") and "code=" in callback, callback
    return oauth.fetch_token(metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier)


def _admin_token(base: str, admin: dict) -> str:
    response = requests.post(f"{base}/token", data={"grant_type": "client_credentials", "scope": "admin"},
                             auth=(admin["client_id"], admin["client_secret"]), timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _db(deployment):
    return psycopg.connect(deployment.env["IDP_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://"),
                           autocommit=True)


def _deliveries(deployment, client_id: str) -> list[dict]:
    with _db(deployment) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT session_id, status, attempts, last_error, delivered_at, logout_token "
                    "FROM logout_deliveries WHERE client_id = %s ORDER BY created_at", (client_id,))
        return cur.fetchall()


def _wait_for_rows(deployment, client_id: str, ready, timeout: float = 15) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _deliveries(deployment, client_id)
        if ready(rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"logout_deliveries never got there: {_deliveries(deployment, client_id)}")


def _verify_logout_token(token: str, issuer: str, client_id: str, sid: str, sub: str) -> dict:
    """Our own check of what the IdP sent (OIDC Back-Channel Logout 1.0 §2.4, CONFORMANCE A4-3)."""
    metadata = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5).json()
    keys = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=5).json())
    decoded = jwt.decode(token, keys, algorithms=metadata["id_token_signing_alg_values_supported"])
    assert decoded.header["typ"] == "logout+jwt" and decoded.header["kid"]
    jwt.JWTClaimsRegistry(leeway=5, iss={"essential": True, "value": issuer},
                          aud={"essential": True, "value": client_id}, iat={"essential": True},
                          jti={"essential": True}, sid={"essential": True, "value": sid},
                          sub={"essential": True, "value": sub}).validate(decoded.claims)
    claims = decoded.claims
    assert claims["iat"] <= time.time() + 5
    assert claims["events"] == {LOGOUT_EVENT: {}}
    assert "nonce" not in claims
    return claims


def test_session_ended_on_one_instance_logs_the_app_out(deployment, relying_apps, tmp_path):
    rp_port, second_port = free_port(), free_port()
    setup = _setup(deployment, rp_port)
    user, client = setup["user"], setup["rp"]
    issuer, second = _start_instances(deployment, [deployment.port, second_port])
    rp = relying_apps(tmp_path, issuer, client, rp_port)
    rp.start()

    metadata = requests.get(f"{second}/.well-known/openid-configuration", timeout=5).json()
    assert metadata["issuer"] == issuer  # the second instance speaks for the same issuer
    assert metadata["backchannel_logout_supported"] and metadata["backchannel_logout_session_supported"]

    browser, app_claims = _sign_in_through_app(rp)
    sid = app_claims["sid"]
    assert app_claims["sub"] == user["id"] and app_claims["iss"] == issuer
    tokens = _sso_tokens(browser, metadata, client, rp)
    keys = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=5).json())
    assert jwt.decode(tokens["id_token"], keys).claims["sid"] == sid  # our tokens are of that same session
    assert tokens["refresh_token"]

    admin = {"Authorization": "Bearer " + _admin_token(second, setup["admin"])}
    listed = requests.get(f"{second}/api/admin/users/{user['id']}/sessions", headers=admin, timeout=5).json()
    assert [s["id"] for s in listed["sessions"]] == [sid]
    ended = requests.delete(f"{second}/api/admin/sessions/{sid}", headers=admin, timeout=5)
    assert ended.status_code == 204, ended.text

    received = rp.wait_for_received(1, timeout=15)
    assert len(received) == 1
    rows = _wait_for_rows(deployment, client["client_id"], lambda r: r and r[0]["status"] == "delivered")
    assert len(rows) == 1 and rows[0]["session_id"] == sid
    ours = _verify_logout_token(rows[0]["logout_token"], issuer, client["client_id"], sid, user["id"])
    assert received[0] == ours  # the app verified the very token the outbox holds

    assert _app_claims(browser, rp) is None  # the app's own session is gone
    assert "Not signed in" in browser.get(rp.base + "/", timeout=5).text

    for base in (issuer, second):
        introspection = requests.post(f"{base}/introspect", data={"token": tokens["access_token"]},
                                      auth=(client["client_id"], client["client_secret"]), timeout=5)
        assert introspection.status_code == 200 and introspection.json() == {"active": False}
        userinfo = requests.get(f"{base}/userinfo", timeout=5,
                                headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert userinfo.status_code == 401
    refresh = requests.post(f"{issuer}/token", data={"grant_type": "refresh_token",
                                                     "refresh_token": tokens["refresh_token"]},
                            auth=(client["client_id"], client["client_secret"]), timeout=5)
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"

    # CONFORMANCE A4-4: the ended IdP session no longer signs anyone in silently.
    silent = browser.get(rp.base + "/login", allow_redirects=False, timeout=5).headers["Location"]
    silent_answer = browser.get(silent + "&prompt=none", allow_redirects=False, timeout=5)
    assert parse_qs(urlsplit(silent_answer.headers["Location"]).query)["error"] == ["login_required"]

    # A replayed logout token is refused by the app: its jti was seen.
    replay = requests.post(rp.base + "/backchannel-logout", data={"logout_token": rows[0]["logout_token"]},
                           timeout=5)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_request"
    # Neither is anything that is not a logout token (an ID token is signed by the same keys).
    for bad in ({}, {"logout_token": "not.a.jwt"}, {"logout_token": tokens["id_token"]}):
        refused = requests.post(rp.base + "/backchannel-logout", data=bad, timeout=5)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_request", refused.text
    assert len(rp.received()) == 1
    browser.close()


def test_logout_waits_in_the_outbox_through_app_downtime_and_idp_restarts(deployment, relying_apps, tmp_path):
    rp_port, second_port = free_port(), free_port()
    setup = _setup(deployment, rp_port)
    user, client = setup["user"], setup["rp"]
    issuer, second = _start_instances(deployment, [deployment.port, second_port])
    rp = relying_apps(tmp_path, issuer, client, rp_port)
    rp.start()

    # Two browsers, two IdP sessions, each with the app as a relying party.
    signed_in = [_sign_in_through_app(rp) for _ in range(2)]
    sids = {claims["sid"] for _, claims in signed_in}
    assert len(sids) == 2
    for browser, _ in signed_in:
        browser.close()  # an idle keep-alive connection would hold up gunicorn's graceful stop below
    rp.stop()

    admin = {"Authorization": "Bearer " + _admin_token(second, setup["admin"])}
    ended = requests.post(f"{second}/api/admin/users/{user['id']}/logout", headers=admin, timeout=5)
    assert ended.status_code == 200 and ended.json()["ended"] == 2
    # The immediate attempt fails (nobody listens) and leaves both rows queued.
    rows = _wait_for_rows(deployment, client["client_id"],
                          lambda r: len(r) == 2 and all(row["attempts"] >= 1 for row in r))
    assert {row["session_id"] for row in rows} == sids
    assert all(row["status"] == "pending" and row["last_error"] for row in rows), rows

    deployment.stop()
    assert all(row["status"] == "pending" for row in _deliveries(deployment, client["client_id"]))
    _start_instances(deployment, [deployment.port, second_port])
    rp.start()

    received = rp.wait_for_received(2, timeout=DELIVERY_DEADLINE)
    rows = _wait_for_rows(deployment, client["client_id"],
                          lambda r: all(row["status"] == "delivered" for row in r))
    assert len(rows) == 2 and all(row["delivered_at"] for row in rows)
    time.sleep(2.5)  # a few outbox passes on four workers: nothing arrives a second time
    received = rp.received()
    assert sorted(claims["sid"] for claims in received) == sorted(sids)  # exactly once per session and app
    assert len({claims["jti"] for claims in received}) == 2
    for row in rows:
        claims = _verify_logout_token(row["logout_token"], issuer, client["client_id"], row["session_id"],
                                      user["id"])
        assert claims in received
    assert [row["status"] for row in _deliveries(deployment, client["client_id"])] == ["delivered"] * 2
