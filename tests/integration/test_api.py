"""The JSON APIs of SPEC §5 on both backends, with tokens from real code flows (scope `sessions`,
`admin`) and client credentials; every answer is checked against /api/openapi.json.

Contract: SPEC §5 (endpoints, error shape and statuses), §6.5 (sessions with device, IP, apps),
§6.4 (trusted devices), §6.8 (admin 2FA reset), §6.3 (admin unlock), RFC 6750 §3 (bearer errors).
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from urllib.parse import urlsplit

import pytest
from openapi_spec_validator import validate

from idp.extensions import db
from idp.storage.models import User
from tests.integration.mfa_support import (  # noqa: F401  (clock is a fixture)
    EMAIL,
    clock,
    create_user,
    enrol_totp,
    error_text,
    password_step,
    services_of,
    submit_code,
)
from tests.integration.session_support import (
    IPHONE_DEVICE,
    IPHONE_SAFARI,
    LINUX_CHROME,
    LINUX_DEVICE,
    WINDOWS_DEVICE,
    WINDOWS_FIREFOX,
    Api,
    OpenApiChecker,
    admin_client,
    assert_error,
    assert_tokens_alive,
    assert_tokens_dead,
    browser_for,
    code_flow,
    introspection,
    register_client,
)
from tests.support import IsolatedClient, revoke, token_request

BOB = "bob@example.com"
ROOT = "root@example.com"
NOBODY = "00000000-0000-4000-8000-000000000000"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


# (method, path template, status) answered in this module, per backend: the last test checks that
# every documented answer was seen at least once.
SEEN: dict[str, set] = {}


@pytest.fixture(autouse=True)
def _isolated_requests(app, backend, monkeypatch):
    app.test_client_class = IsolatedClient
    seen = SEEN.setdefault(backend, set())
    original = OpenApiChecker.check

    def check(self, method, url, response):
        original(self, method, url, response)
        seen.add((method.upper(), self.template_for(urlsplit(url).path), str(response.status_code)))

    monkeypatch.setattr(OpenApiChecker, "check", check)


def _iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value} has no time zone"
    return parsed


# -- the document -----------------------------------------------------------------------------------


def test_openapi_document_is_valid_and_lists_exactly_the_api_routes(app):
    response = Api(app).get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.json
    validate(document)  # raises on any violation of the OpenAPI 3.0 schema

    documented = {(re.sub(r"\{[^}]+\}", "{}", path), method.upper())
                  for path, item in document["paths"].items() for method in item if method in HTTP_METHODS}
    routed = {(re.sub(r"<(?:[^:>]+:)?[^>]+>", "{}", rule.rule), method)
              for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed, "no /api routes found"
    assert routed - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routed == set(), "documented operations the server does not have"

    # OpenAPI 3.0.3 §4.8.30: only oauth2 / openIdConnect schemes may name scopes; each named scope exists.
    [(name, scheme)] = document["components"]["securitySchemes"].items()
    assert scheme["type"] == "oauth2"
    assert scheme["flows"]["authorizationCode"]["tokenUrl"] == "http://localhost:5000/token"
    assert set(scheme["flows"]["authorizationCode"]["scopes"]) == {"sessions", "admin"}
    assert set(scheme["flows"]["clientCredentials"]["scopes"]) == {"admin"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS or path == "/api/openapi.json":
                continue
            scope = "admin" if path.startswith("/api/admin/") else "sessions"
            assert operation["security"] == [{name: [scope]}], (method, path)
            for status in ("401", "403"):
                error = operation["responses"][status]["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], (method, path)
            if "{id}" in path:
                assert "404" in operation["responses"], (method, path)
    assert document["paths"]["/api/openapi.json"]["get"]["security"] == []


# -- /api/me: sessions ---------------------------------------------------------------------------------


def test_my_sessions_show_device_ip_app_and_clients_and_can_be_ended(app):
    user_id = create_user(app)
    create_user(app, BOB)
    rp = register_client(app)
    api = Api(app)
    phone = browser_for(app, IPHONE_SAFARI, "198.51.100.7")
    mine = code_flow(phone, rp, app_version="4.2.1")
    assert mine["sub"] == user_id and mine["scope"] == "openid sessions offline_access"
    laptop = browser_for(app, LINUX_CHROME, "203.0.113.20")
    laptop_tokens = code_flow(laptop, rp)
    desktop = browser_for(app, WINDOWS_FIREFOX, "203.0.113.30")
    assert password_step(desktop).status_code == 303  # signed in on the hosted pages only, no app
    bob_tokens = code_flow(browser_for(app, LINUX_CHROME, "192.0.2.99"), rp, BOB)

    listed = api.get("/api/me/sessions", mine["access_token"])
    assert listed.status_code == 200
    sessions = {s["id"]: s for s in listed.json["sessions"]}
    assert len(sessions) == 3 and bob_tokens["sid"] not in sessions
    assert {mine["sid"], laptop_tokens["sid"]} < set(sessions)
    [desktop_sid] = set(sessions) - {mine["sid"], laptop_tokens["sid"]}

    current = sessions[mine["sid"]]
    assert current["current"] is True
    assert current["ip"] == "198.51.100.7"
    assert current["user_agent"] == IPHONE_SAFARI
    assert current["device"] == IPHONE_DEVICE
    assert current["app"] == {"name": "Alarm panel app", "version": "4.2.1"}
    assert [(c["client_id"], c["name"]) for c in current["clients"]] == [(rp["client_id"], "Alarm panel app")]
    assert _iso(current["created_at"]) <= _iso(current["last_active_at"])
    assert _iso(current["created_at"]) <= _iso(current["clients"][0]["signed_in_at"])
    assert current["amr"] == ["pwd"] and current["acr"] == "urn:idp:acr:1fa"

    laptop_entry = sessions[laptop_tokens["sid"]]
    assert laptop_entry["current"] is False
    assert (laptop_entry["ip"], laptop_entry["device"]) == ("203.0.113.20", LINUX_DEVICE)
    assert laptop_entry["app"] == {"name": "Alarm panel app", "version": None}
    desktop_entry = sessions[desktop_sid]
    assert desktop_entry["current"] is False
    assert (desktop_entry["ip"], desktop_entry["device"]) == ("203.0.113.30", WINDOWS_DEVICE)
    assert desktop_entry["app"] is None and desktop_entry["clients"] == []

    # End one: gone from the list, its tokens dead at once; a second time it is not found.
    ended = api.delete(f"/api/me/sessions/{laptop_tokens['sid']}", mine["access_token"])
    assert ended.status_code == 204 and ended.get_data() == b""
    assert_tokens_dead(app, rp, laptop_tokens)
    assert_error(api.get("/api/me/sessions", laptop_tokens["access_token"]), 401, "invalid_token")
    assert_error(api.delete(f"/api/me/sessions/{laptop_tokens['sid']}", mine["access_token"]), 404, "not_found")
    # Another person's session is "not found" (no probing), and stays open; so is an unknown id.
    assert_error(api.delete(f"/api/me/sessions/{bob_tokens['sid']}", mine["access_token"]), 404, "not_found")
    assert_tokens_alive(app, rp, bob_tokens)
    assert_error(api.delete(f"/api/me/sessions/{NOBODY}", mine["access_token"]), 404, "not_found")
    assert_error(api.delete("/api/me/sessions/" + "x" * 300, mine["access_token"]), 404, "not_found")

    # Terminate the others: the desktop session ends, the token's own session stays.
    others = api.post("/api/me/sessions/terminate-others", mine["access_token"])
    assert others.status_code == 200 and others.json == {"ended": 1}
    remaining = api.get("/api/me/sessions", mine["access_token"]).json["sessions"]
    assert [(s["id"], s["current"]) for s in remaining] == [(mine["sid"], True)]
    assert_tokens_alive(app, rp, mine)
    assert desktop.get("/account").status_code == 302, "the desktop browser was signed out"
    assert api.post("/api/me/sessions/terminate-others", mine["access_token"]).json == {"ended": 0}
    assert_tokens_alive(app, rp, bob_tokens)


# -- /api/me: trusted devices -----------------------------------------------------------------------------


def test_my_trusted_devices_can_be_listed_renamed_and_forgotten(app):
    user_id = create_user(app)
    bob_id = create_user(app, BOB)
    with app.app_context():
        devices = services_of(app).devices
        device_id = devices.trust(user_id, "Kitchen iPad", IPHONE_SAFARI, "198.51.100.7")[0].id
        bob_device_id = devices.trust(bob_id, "Bob's laptop", LINUX_CHROME, "192.0.2.99")[0].id
    rp = register_client(app)
    api = Api(app)
    token = code_flow(browser_for(app), rp)["access_token"]

    listed = api.get("/api/me/devices", token)
    assert listed.status_code == 200
    [device] = listed.json["devices"]
    assert device["id"] == device_id and device["name"] == "Kitchen iPad"
    assert device["ip"] == "198.51.100.7" and device["device"] == IPHONE_DEVICE
    assert _iso(device["created_at"]) <= _iso(device["last_used_at"]) < _iso(device["expires_at"])

    renamed = api.patch(f"/api/me/devices/{device_id}", token, json={"name": "  Hall   iPad "})
    assert renamed.status_code == 200
    assert renamed.json == {**device, "name": "Hall iPad"}
    assert api.get("/api/me/devices", token).json["devices"][0]["name"] == "Hall iPad"

    url = f"/api/me/devices/{device_id}"
    for case, kwargs in {
        "not JSON": {"data": "{name: 'x'", "content_type": "application/json"},
        "JSON but not declared": {"data": '{"name": "x"}', "content_type": "text/plain"},
        "no body": {},
        "an array": {"json": ["x"]},
        "no name": {"json": {}},
        "a number": {"json": {"name": 5}},
        "null": {"json": {"name": None}},
    }.items():
        refused = api.patch(url, token, **kwargs)
        assert refused.status_code == 400, case
        assert_error(refused, 400, "invalid_request", 'Send a JSON object {"name": "…"}.')
    assert_error(api.patch(url, token, json={"name": "   "}), 400, "invalid_request", "Give the device a name.")
    assert api.get("/api/me/devices", token).json["devices"][0]["name"] == "Hall iPad", "refusals changed nothing"

    assert_error(api.patch(f"/api/me/devices/{bob_device_id}", token, json={"name": "Mine now"}), 404, "not_found")
    assert_error(api.patch(f"/api/me/devices/{NOBODY}", token, json={"name": "x"}), 404, "not_found")
    assert_error(api.delete(f"/api/me/devices/{bob_device_id}", token), 404, "not_found")
    with app.app_context():
        assert [d.name for d in services_of(app).devices.list(bob_id)] == ["Bob's laptop"]

    forgotten = api.delete(url, token)
    assert forgotten.status_code == 204 and forgotten.get_data() == b""
    assert_error(api.delete(url, token), 404, "not_found")
    assert api.get("/api/me/devices", token).json == {"devices": []}


# -- /api/admin ----------------------------------------------------------------------------------------------


def test_admin_api_finds_users_and_ends_resets_locks_unlocks_and_revokes(app, clock):
    user_id = create_user(app, phone="+14155550100")
    phone = enrol_totp(app, user_id, clock)
    with app.app_context():
        services_of(app).devices.trust(user_id, "Kitchen iPad", IPHONE_SAFARI, "198.51.100.7")
    admin = admin_client(app)
    rp = register_client(app)
    api = Api(app)
    token = admin["token"]
    actor = {"type": "client", "id": admin["client_id"]}

    def prove(client):
        return submit_code(client, phone.next_code())

    browser = browser_for(app, IPHONE_SAFARI, "198.51.100.7")
    first = code_flow(browser, rp, prove=prove, app_version="4.2.1")
    second = code_flow(browser_for(app, LINUX_CHROME, "203.0.113.20"), rp, prove=prove)

    # Find and read.
    found = api.get("/api/admin/users?email=%20Alice@EXAMPLE.com%20", token)
    assert found.status_code == 200
    [listed] = found.json["users"]
    assert listed == {"id": user_id, "email": EMAIL, "email_verified": True, "name": "Alice",
                      "phone": "+14155550100", "phone_verified": True, "is_admin": False, "locked": False,
                      "locked_at": None, "created_at": listed["created_at"]}
    assert api.get("/api/admin/users?email=nobody@example.com", token).json == {"users": []}
    for query in ("", "?email=", "?name=Alice"):
        assert_error(api.get("/api/admin/users" + query, token), 400, "invalid_request")
    one = api.get(f"/api/admin/users/{user_id}", token)
    assert one.status_code == 200 and one.json == {**listed, "second_factors": ["totp"]}

    sessions = api.get(f"/api/admin/users/{user_id}/sessions", token)
    assert sessions.status_code == 200
    by_id = {s["id"]: s for s in sessions.json["sessions"]}
    assert set(by_id) == {first["sid"], second["sid"]}
    assert all(s["current"] is False for s in by_id.values()), "an admin token belongs to no session of the user"
    assert by_id[first["sid"]]["device"] == IPHONE_DEVICE and by_id[first["sid"]]["ip"] == "198.51.100.7"
    assert by_id[first["sid"]]["app"] == {"name": "Alarm panel app", "version": "4.2.1"}
    assert by_id[first["sid"]]["amr"] == ["pwd", "otp", "mfa"]

    # End one session, then every session.
    ended = api.delete(f"/api/admin/sessions/{first['sid']}", token)
    assert ended.status_code == 204 and ended.get_data() == b""
    assert_tokens_dead(app, rp, first)
    assert_tokens_alive(app, rp, second)
    assert_error(api.delete(f"/api/admin/sessions/{first['sid']}", token), 404, "not_found")
    assert_error(api.delete(f"/api/admin/sessions/{NOBODY}", token), 404, "not_found")
    everywhere = api.post(f"/api/admin/users/{user_id}/logout", token)
    assert everywhere.status_code == 200 and everywhere.json == {"ended": 1}
    assert_tokens_dead(app, rp, second)
    assert api.post(f"/api/admin/users/{user_id}/logout", token).json == {"ended": 0}
    assert api.get(f"/api/admin/users/{user_id}/sessions", token).json == {"sessions": []}

    # 2FA reset: factors and trusted devices go, sessions end; the password alone signs in again.
    third = code_flow(browser, rp, prove=prove)
    reset = api.post(f"/api/admin/users/{user_id}/mfa/reset", token)
    assert reset.status_code == 200
    assert reset.json == {"factors_removed": ["totp"], "devices_forgotten": 1, "sessions_ended": 1}
    assert_tokens_dead(app, rp, third)
    assert api.get(f"/api/admin/users/{user_id}", token).json["second_factors"] == []
    fourth = code_flow(browser, rp)

    # Lock: sessions end, sign-in is refused; a second lock is a conflict. Unlock once, then conflict.
    locked = api.post(f"/api/admin/users/{user_id}/lock", token)
    assert locked.status_code == 200 and locked.json == {"locked": True, "sessions_ended": 1}
    assert_tokens_dead(app, rp, fourth)
    state = api.get(f"/api/admin/users/{user_id}", token).json
    assert state["locked"] is True and _iso(state["locked_at"])
    refused = password_step(browser_for(app))
    assert refused.status_code == 200 and error_text(refused) == "Incorrect email or password."
    assert_error(api.post(f"/api/admin/users/{user_id}/lock", token), 409, "conflict",
                 "The account is already locked.")
    unlocked = api.post(f"/api/admin/users/{user_id}/unlock", token)
    assert unlocked.status_code == 200 and unlocked.json == {"locked": False}
    assert api.get(f"/api/admin/users/{user_id}", token).json["locked"] is False
    assert_error(api.post(f"/api/admin/users/{user_id}/unlock", token), 409, "conflict",
                 "The account is not locked.")

    # Revoke single tokens: an access token alone, then a refresh token with its whole grant.
    fifth = code_flow(browser_for(app), rp)
    revoked = api.post("/api/admin/tokens/revoke", token, json={"token": fifth["access_token"]})
    assert revoked.status_code == 200 and revoked.json == {"revoked": True}
    assert introspection(app, rp, fifth["access_token"]) == {"active": False}
    refreshed = token_request(app.test_client(), rp, {"grant_type": "refresh_token",
                                                      "refresh_token": fifth["refresh_token"]})
    assert refreshed.status_code == 200, "revoking an access token leaves its refresh token"
    renewed = refreshed.json
    assert api.post("/api/admin/tokens/revoke", token, json={"token": renewed["refresh_token"]}).json == {
        "revoked": True}
    assert introspection(app, rp, renewed["access_token"]) == {"active": False}
    refused_refresh = token_request(app.test_client(), rp, {"grant_type": "refresh_token",
                                                            "refresh_token": renewed["refresh_token"]})
    assert refused_refresh.status_code == 400 and refused_refresh.json["error"] == "invalid_grant"
    assert api.post("/api/admin/tokens/revoke", token, json={"token": "not-a-token"}).json == {"revoked": False}
    for case, kwargs in {
        "not JSON": {"data": "token=abc", "content_type": "application/x-www-form-urlencoded"},
        "broken JSON": {"data": '{"token": ', "content_type": "application/json"},
        "no body": {},
        "no token": {"json": {}},
        "empty token": {"json": {"token": ""}},
        "a number": {"json": {"token": 42}},
        "an array": {"json": [fifth["access_token"]]},
    }.items():
        refused = api.post("/api/admin/tokens/revoke", token, **kwargs)
        assert refused.status_code == 400, case
        assert_error(refused, 400, "invalid_request", 'Send a JSON object {"token": "…"}.')

    # Unknown users: 404 JSON everywhere.
    for method, suffix in (("GET", ""), ("GET", "/sessions"), ("GET", "/events"), ("POST", "/logout"),
                           ("POST", "/mfa/reset"), ("POST", "/lock"), ("POST", "/unlock")):
        missing = api.call(method, f"/api/admin/users/{NOBODY}{suffix}", token)
        assert missing.status_code == 404, suffix
        assert_error(missing, 404, "not_found", "No such user.")

    # The audit trail, newest first, names the admin client as the actor of every action.
    events = api.get(f"/api/admin/users/{user_id}/events", token)
    assert events.status_code == 200
    trail = events.json["events"]
    stamps = [_iso(e["occurred_at"]) for e in trail]
    assert stamps == sorted(stamps, reverse=True)
    ended_events = [(e["session_id"], e["details"]["reason"], e["actor"]) for e in trail
                    if e["event"] == "session_ended"]
    assert ended_events == [
        (fourth["sid"], "account_locked", actor),
        (third["sid"], "mfa_reset", actor),
        (second["sid"], "ended_by_admin", actor),
        (first["sid"], "ended_by_admin", actor),
    ]
    admin_events = [(e["event"], e["actor"]) for e in trail if e["event"] in (
        "mfa_reset", "account_locked", "account_unlocked", "token_revoked")]
    assert admin_events == [("token_revoked", actor), ("token_revoked", actor), ("account_unlocked", actor),
                            ("account_locked", actor), ("mfa_reset", actor)]
    sign_ins = [e for e in trail if e["event"] == "sign_in"]
    assert len(sign_ins) == 5 and sign_ins[-1]["ip"] == "198.51.100.7"
    assert sign_ins[-1]["user_agent"] == IPHONE_SAFARI and sign_ins[-1]["actor"] == {"type": "user", "id": user_id}


def test_admin_api_invites_lists_and_cancels(app):
    """The invitation endpoints' answers (details in test_invitations.py)."""
    token = admin_client(app)["token"]
    api = Api(app)
    created = api.post("/api/admin/invitations", token, json={"email": "carol@example.com"})
    assert created.status_code == 201 and created.json["status"] == "pending"
    assert api.get("/api/admin/invitations", token).json["invitations"] == [created.json]
    assert_error(api.post("/api/admin/invitations", token, json={"email": "carol@example.com"}), 409, "conflict")
    assert_error(api.post("/api/admin/invitations", token, json={}), 400, "invalid_request")
    assert api.delete(f"/api/admin/invitations/{created.json['id']}", token).status_code == 204
    assert_error(api.delete(f"/api/admin/invitations/{created.json['id']}", token), 409, "conflict")
    assert_error(api.delete(f"/api/admin/invitations/{NOBODY}", token), 404, "not_found")


# -- who may call what -----------------------------------------------------------------------------------------


ME = ("GET", "/api/me/sessions")
ADMIN = ("GET", "/api/admin/users?email=alice@example.com")


def _operations(api: Api):
    """Every documented operation that needs a token, as (method, url, scope)."""
    for path, item in api.checker.document["paths"].items():
        for method in item:
            if method in HTTP_METHODS and path != "/api/openapi.json":
                url = path.replace("{id}", NOBODY) + ("?email=alice@example.com" if path == "/api/admin/users" else "")
                yield method.upper(), url, "admin" if path.startswith("/api/admin/") else "sessions"


def test_missing_invalid_and_revoked_tokens_get_401_with_a_challenge(app):
    create_user(app)
    rp = register_client(app)
    api = Api(app)
    tokens = code_flow(browser_for(app), rp)

    for method, url, _ in _operations(api):
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
                        {"Authorization": tokens["access_token"]}):
            response = api.call(method, url, headers=headers)
            assert_error(response, 401, "unauthorized", "An access token is required.")
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="idp"', (url, headers)
        for bad in ("garbage", tokens["id_token"], tokens["refresh_token"], tokens["access_token"][:-4] + "AAAA"):
            response = api.call(method, url, bad)
            assert_error(response, 401, "invalid_token", "The access token is invalid, expired or revoked.")
            assert response.headers["WWW-Authenticate"] == (
                'Bearer realm="idp", error="invalid_token", '
                'error_description="The access token is invalid, expired or revoked."'), (url, bad)

    assert api.get(ME[1], tokens["access_token"]).status_code == 200
    assert revoke(app.test_client(), rp, tokens["access_token"]).status_code == 200
    assert_error(api.get(ME[1], tokens["access_token"]), 401, "invalid_token")


def test_scopes_and_admin_rights_decide_403(app):
    alice_id = create_user(app)
    root_id = create_user(app, ROOT, is_admin=True)
    rp = register_client(app)
    door = register_client(app, "Door lock app", scope="openid profile")
    console = register_client(app, "Admin console", scope="openid admin")
    machine = admin_client(app)
    api = Api(app)

    alice = browser_for(app)
    sessions_token = code_flow(alice, rp)["access_token"]
    door_token = code_flow(alice, door)["access_token"]
    alice_console = code_flow(alice, console)
    root_console = code_flow(browser_for(app, WINDOWS_FIREFOX), console, ROOT)

    def insufficient(response, scope):
        assert_error(response, 403, "insufficient_scope", f"The token lacks the '{scope}' scope.")
        assert response.headers["WWW-Authenticate"] == (
            f'Bearer realm="idp", error="insufficient_scope", scope="{scope}"')

    # Every operation, with a token of the person that lacks its scope.
    for method, url, scope in _operations(api):
        insufficient(api.call(method, url, door_token if scope == "sessions" else sessions_token), scope)
    insufficient(api.post(f"/api/admin/users/{root_id}/lock", sessions_token), "admin")
    # An admin-capable app used by someone who is no administrator hands out no admin rights.
    assert alice_console["scope"] == "openid"
    assert introspection(app, console, alice_console["access_token"])["scope"] == "openid"
    insufficient(api.get(ADMIN[1], alice_console["access_token"]), "admin")
    assert root_console["scope"] == "openid admin"
    assert api.get(ADMIN[1], root_console["access_token"]).json["users"][0]["id"] == alice_id
    # A client-credentials token has no person behind it: /api/me is not for it.
    insufficient(api.get(ME[1], machine["token"]), "sessions")
    insufficient(api.post("/api/me/sessions/terminate-others", machine["token"]), "sessions")
    assert api.get(ADMIN[1], machine["token"]).status_code == 200
    # A client-credentials token cannot be given the sessions scope in the first place.
    with app.app_context():
        client, secret = services_of(app).clients.create(name="Wall display", grant_types=["client_credentials"],
                                                         scope="sessions admin")
        wall = {"client_id": client.client_id, "client_secret": secret}
    asked = token_request(app.test_client(), wall, {"grant_type": "client_credentials", "scope": "sessions"})
    assert asked.status_code == 400 and asked.json["error"] == "invalid_scope"

    # An administrator who is demoted loses the API at once, even with a token that still says admin.
    with app.app_context():
        db.session.get(User, root_id).is_admin = False
        db.session.commit()
    assert_error(api.get(ADMIN[1], root_console["access_token"]), 403, "forbidden",
                 "Only administrators may do this.")
    assert api.get(ADMIN[1], machine["token"]).status_code == 200


def test_api_errors_are_json_for_unknown_routes_methods_and_oversized_bodies(app):
    create_user(app)
    rp = register_client(app)
    token = code_flow(browser_for(app), rp)["access_token"]
    http = app.test_client()
    unknown = http.get("/api/me/nothing-here", headers={"Authorization": f"Bearer {token}"})
    assert_error(unknown, 404, "not_found")
    wrong_method = http.put("/api/me/sessions", headers={"Authorization": f"Bearer {token}"})
    assert_error(wrong_method, 405, "method_not_allowed")
    assert set(wrong_method.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    huge = http.patch(f"/api/me/devices/{NOBODY}", headers={"Authorization": f"Bearer {token}"},
                      data="x" * (300 * 1024), content_type="application/json")
    assert_error(huge, 413, "invalid_request")


def test_admin_api_deletes_a_user_but_not_the_last_administrator(app):
    user_id = create_user(app)
    root_id = create_user(app, ROOT, is_admin=True)
    machine = admin_client(app)
    api = Api(app)
    assert api.delete(f"/api/admin/users/{user_id}", machine["token"]).status_code == 204
    assert_error(api.delete(f"/api/admin/users/{user_id}", machine["token"]), 404, "not_found")
    assert_error(api.delete(f"/api/admin/users/{root_id}", machine["token"]), 409, "conflict")


def test_every_documented_answer_was_given_by_the_tests_above(app, backend, request):
    """Keep last: the tests of this module together produced every documented (operation, status)."""
    module = sys.modules[__name__]
    functions = {name for name in dir(module) if name.startswith("test_") and name != request.function.__name__}
    ran = {item.function.__name__ for item in request.session.items
           if item.module is module and item.callspec.params.get("backend") == backend}
    if not functions <= ran:
        pytest.skip("only meaningful when the whole module runs")
    document = Api(app).checker.document
    documented = {(method.upper(), path, status) for path, item in document["paths"].items()
                  for method, operation in item.items() if method in HTTP_METHODS
                  for status in operation["responses"]}
    assert documented - SEEN[backend] == set(), "documented answers no test produced"
