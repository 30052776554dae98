"""Every way a session ends (SPEC §6.7) has the same consequences, checked one trigger at a time:
the session is ended in the database, its refresh token is refused, its access token fails
introspection and UserInfo at once (§3), a back-channel logout token reaches the relying app that
signed in through it (OIDC Back-Channel Logout 1.0, verified with the published keys), and the audit
trail says who ended it and why (§6.11). Then: retries with backoff for an app that is down, no
duplicates, and every app of a session hears of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from idp.extensions import db
from idp.notify.delivery import LogoutDeliverer
from idp.oidc.backchannel import enqueue_logouts
from tests.integration.mfa_support import (  # noqa: F401  (clock is a fixture)
    Phone,
    clock,
    create_user,
    enrol_totp,
    error_text,
    ip,
    notice_text,
    password_step,
    services_of,
    submit_code,
    to_second_factor,
)
from tests.integration.session_support import (
    IPHONE_SAFARI,
    LINUX_CHROME,
    PLRU,
    WINDOWS_FIREFOX,
    Api,
    admin_client,
    assert_tokens_alive,
    assert_tokens_dead,
    browser_for,
    code_flow,
    delivery_rows,
    end_link_path,
    logout_token_of,
    outbox,
    register_client,
    session_ended_events,
    session_row,
    verify_logout_token,
    wait_for_posts,
    wait_until,
)
from tests.support import PASSWORD, IsolatedClient, csrf_from

IDLE_TTL = 1800
NEW_PASSWORD = "violet tractor quantum marmalade 1987"


@dataclass
class World:
    app: object
    user_id: str
    rp: dict
    receiver: object
    clock: object
    api: Api
    phone: Phone | None = None
    victim_browser: object = None
    victim: dict = field(default_factory=dict)
    surviving_tokens: list = field(default_factory=list)
    surviving_browsers: list = field(default_factory=list)
    _admin: dict | None = None
    _root: tuple | None = None

    def prove(self, client):
        return submit_code(client, self.phone.next_code())

    @property
    def admin(self) -> dict:
        """An admin machine client (client credentials, scope admin)."""
        if self._admin is None:
            self._admin = admin_client(self.app)
        return self._admin

    @property
    def root(self) -> tuple[str, str]:
        """An administrator person signed in through an admin console: (user id, access token)."""
        if self._root is None:
            root_id = create_user(self.app, "root@example.com", is_admin=True)
            console = register_client(self.app, "Admin console", scope="openid admin",
                                      redirect_uri="https://console.example/cb")
            tokens = code_flow(browser_for(self.app, WINDOWS_FIREFOX, "192.0.2.50"), console, "root@example.com")
            assert tokens["scope"] == "openid admin"
            self._root = (root_id, tokens["access_token"])
        return self._root

    def other_browser(self, address: str = "203.0.113.20"):
        """A second browser of the same person, signed in on the hosted pages (no app)."""
        browser = browser_for(self.app, LINUX_CHROME, address)
        assert password_step(browser).status_code == 303
        self.surviving_browsers.append(browser)
        return browser

    def other_app_session(self) -> dict:
        """A second session of the same person, signed in through the same app."""
        tokens = code_flow(browser_for(self.app, LINUX_CHROME, "203.0.113.21"), self.rp)
        self.surviving_tokens.append(tokens)
        return tokens


@pytest.fixture
def world(make_app, http_receiver, clock):
    # An access token outlives the idle limit here, so "refused at once" after expiry is not just old age.
    app = make_app(session_idle_ttl=IDLE_TTL, access_token_ttl=2 * IDLE_TTL)
    app.test_client_class = IsolatedClient
    user_id = create_user(app)
    rp = register_client(app, backchannel_logout_uri=http_receiver.url("/backchannel"))
    return World(app, user_id, rp, http_receiver, clock, Api(app))


# -- the triggers: each ends the victim's session and says (reason, actor type, actor id) ---------------


def by_user_api(w: World):
    actor = w.other_app_session()
    response = w.api.delete(f"/api/me/sessions/{w.victim['sid']}", actor["access_token"])
    assert response.status_code == 204
    return "ended_by_user", "user", w.user_id


def by_user_api_terminate_others(w: World):
    actor = w.other_app_session()
    response = w.api.post("/api/me/sessions/terminate-others", actor["access_token"])
    assert response.status_code == 200 and response.json == {"ended": 1}
    return "ended_by_user", "user", w.user_id


def _sessions_page(browser, victim_sid: str) -> str:
    page = browser.get("/account/sessions")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    row = re.search(rf'<tr data-session-id="{victim_sid}">(.*?)</tr>', html, re.S)
    assert row, "the other session is listed"
    text = " ".join(re.sub(r"<[^>]+>", " ", row.group(1)).split())
    assert text.startswith("Apple iPhone iOS 17.4 · Mobile Safari 17.4 Alarm panel app 198.51.100.7"), text
    return html


def by_sessions_page_end(w: World):
    create_user(w.app, "bob@example.com")
    bob = browser_for(w.app, WINDOWS_FIREFOX, "192.0.2.99")
    bob_sid = code_flow(bob, w.rp, "bob@example.com")["sid"]
    browser = w.other_browser()
    html = _sessions_page(browser, w.victim["sid"])
    assert bob_sid not in html
    # Someone else's session id, posted by hand: not found, and it stays open.
    refused = browser.post(f"/account/sessions/{bob_sid}/end", data={"csrf_token": csrf_from(html)})
    assert refused.status_code == 302
    page = browser.get("/account/sessions")
    assert error_text(page) == "No such session."
    assert session_row(w.app, bob_sid)["ended_at"] is None
    action = f'/account/sessions/{w.victim["sid"]}/end'
    assert f'action="{action}"' in html
    response = browser.post(action, data={"csrf_token": csrf_from(html)})
    assert response.status_code == 302 and response.headers["Location"] == "/account/sessions"
    assert notice_text(browser.get("/account/sessions")) == "The session was ended and its apps signed out."
    # A second click (an old tab) says so instead of saying nothing.
    browser.post(action, data={"csrf_token": csrf_from(html)})
    assert notice_text(browser.get("/account/sessions")) == "That session had already ended."
    return "ended_by_user", "user", w.user_id


def by_sessions_page_end_all_others(w: World):
    browser = w.other_browser()
    html = _sessions_page(browser, w.victim["sid"])
    assert "End all other sessions</button>" in html
    response = browser.post("/account/sessions/end-others", data={"csrf_token": csrf_from(html)})
    assert response.status_code == 302 and response.headers["Location"] == "/account/sessions"
    assert notice_text(browser.get("/account/sessions")) == "1 other session(s) were ended."
    return "ended_by_user", "user", w.user_id


def by_admin_api(w: World):
    response = w.api.delete(f"/api/admin/sessions/{w.victim['sid']}", w.admin["token"])
    assert response.status_code == 204
    return "ended_by_admin", "client", w.admin["client_id"]


def by_admin_logout_everywhere(w: World):
    root_id, token = w.root
    response = w.api.post(f"/api/admin/users/{w.user_id}/logout", token)
    assert response.status_code == 200 and response.json == {"ended": 1}
    return "ended_by_admin", "admin", root_id


def by_password_change(w: World):
    browser = w.other_browser()
    page = browser.get("/account/security").get_data(as_text=True)
    response = browser.post("/account/security/password", data={
        "csrf_token": csrf_from(page), "current_password": PASSWORD, "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/account/security"
    assert notice_text(browser.get("/account/security")) == (
        "Your password was changed. 1 other session(s) were signed out.")
    return "password_changed", "user", w.user_id


def by_enabling_a_second_factor(w: World):
    browser = w.other_browser()
    page = browser.get("/account/security").get_data(as_text=True)
    assert 'name="enabled" value="1"' in page
    response = browser.post("/account/security/email-codes", data={"csrf_token": csrf_from(page), "enabled": "1"})
    assert response.status_code == 302 and response.headers["Location"] == "/account/security"
    assert notice_text(browser.get("/account/security")) == "Email codes are on."
    return "second_factor_enabled", "user", w.user_id


def by_admin_2fa_reset(w: World):
    response = w.api.post(f"/api/admin/users/{w.user_id}/mfa/reset", w.admin["token"])
    assert response.status_code == 200
    assert response.json == {"factors_removed": ["totp"], "devices_forgotten": 0, "sessions_ended": 1}
    return "mfa_reset", "client", w.admin["client_id"]


def by_wrong_codes(w: World):
    attacker = browser_for(w.app, WINDOWS_FIREFOX, "192.0.2.1")
    to_second_factor(attacker)
    for n in range(1, 4):
        wrong = submit_code(attacker, w.phone.wrong_code(), **ip(f"192.0.2.{n}"))
        assert wrong.status_code == 200, n
    locked = submit_code(attacker, w.phone.wrong_code(), **ip("192.0.2.4"))
    assert locked.status_code == 403 and "<h1>Your account is locked</h1>" in locked.get_data(as_text=True)
    return "account_locked", "system", None


def by_admin_lock(w: World):
    root_id, token = w.root
    response = w.api.post(f"/api/admin/users/{w.user_id}/lock", token)
    assert response.status_code == 200 and response.json == {"locked": True, "sessions_ended": 1}
    return "account_locked", "admin", root_id


def by_expiry(w: World):
    w.clock.shift(IDLE_TTL + 60)
    with w.app.app_context():
        assert services_of(w.app).sessions.end_expired() == 1
        assert services_of(w.app).sessions.end_expired() == 0
    return "expired", "system", None


def by_rp_logout(w: World):
    response = w.victim_browser.get("/logout", query_string={
        "id_token_hint": w.victim["id_token"], "post_logout_redirect_uri": PLRU, "state": "bye"})
    assert response.status_code == 302 and response.headers["Location"] == PLRU + "?state=bye"
    return "rp_logout", "user", w.user_id


def by_new_device_email_link(w: World):
    [message] = [m for m in outbox(w.app) if "New sign-in" in m["Subject"]]
    path = end_link_path(message.get_body(preferencelist=("plain",)).get_content())
    elsewhere = browser_for(w.app, WINDOWS_FIREFOX, "192.0.2.77")  # not signed in at all
    page = elsewhere.get(path)
    assert page.status_code == 200
    response = elsewhere.post(path, data={"csrf_token": csrf_from(page.get_data(as_text=True))})
    assert response.status_code == 200
    assert "The session was ended and its apps signed out." in response.get_data(as_text=True)
    return "ended_by_email_link", "user", w.user_id


TRIGGERS = {
    "user-api-delete": (by_user_api, False),
    "user-api-terminate-others": (by_user_api_terminate_others, False),
    "sessions-page-end": (by_sessions_page_end, False),
    "sessions-page-end-all-others": (by_sessions_page_end_all_others, False),
    "admin-api-delete": (by_admin_api, False),
    "admin-api-logout-everywhere": (by_admin_logout_everywhere, False),
    "password-change": (by_password_change, False),
    "second-factor-enabled": (by_enabling_a_second_factor, False),
    "admin-2fa-reset": (by_admin_2fa_reset, True),
    "account-lock-wrong-codes": (by_wrong_codes, True),
    "admin-lock": (by_admin_lock, False),
    "expiry": (by_expiry, False),
    "rp-initiated-logout": (by_rp_logout, False),
    "new-device-email-link": (by_new_device_email_link, False),
}


class WrongActor(AssertionError):
    """The session_ended record names someone other than who ended the session."""


CASES = list(TRIGGERS)


@pytest.mark.parametrize("trigger", CASES)
def test_an_ended_session_is_refused_at_once_announced_and_audited(world, trigger):
    action, needs_totp = TRIGGERS[trigger]
    w = world
    if needs_totp:
        w.phone = enrol_totp(w.app, w.user_id, w.clock)
    w.victim_browser = browser_for(w.app, IPHONE_SAFARI, "198.51.100.7")
    w.victim = code_flow(w.victim_browser, w.rp, prove=w.prove if needs_totp else None)
    assert_tokens_alive(w.app, w.rp, w.victim)
    assert w.receiver.requests == []

    reason, actor_type, actor_id = action(w)

    # Ended in the database, and every token of it refused at once.
    row = session_row(w.app, w.victim["sid"])
    assert row["ended_at"] is not None and row["end_reason"] == reason, row
    assert_tokens_dead(w.app, w.rp, w.victim)

    # One back-channel logout token, to the app that signed in through the session.
    [post] = wait_for_posts(w.receiver, 1)
    assert post["path"] == "/backchannel" and post["status"] == 200
    verify_logout_token(w.app, logout_token_of(post), w.rp["client_id"], w.victim["sid"], w.user_id)
    [delivery] = wait_until(lambda: [r for r in delivery_rows(w.app) if r["status"] == "delivered"] or None,
                            what="the outbox row marked delivered")
    assert (delivery["session_id"], delivery["client_id"], delivery["attempts"]) == (
        w.victim["sid"], w.rp["client_id"], 1)
    assert len(delivery_rows(w.app)) == 1, "no other session was ended"

    # Nothing else was touched: the acting session carries on.
    for tokens in w.surviving_tokens:
        assert_tokens_alive(w.app, w.rp, tokens)
    for browser in w.surviving_browsers:
        assert browser.get("/account").status_code == 200
    assert len(w.receiver.requests) == 1

    # The audit trail: ended once, why, and by whom.
    [event] = session_ended_events(w.app, w.user_id, w.victim["sid"])
    assert event["details"] == {"reason": reason}
    if (event["actor_type"], event["actor_id"]) != (actor_type, actor_id):
        raise WrongActor(f"recorded {event['actor_type']}/{event['actor_id']}, expected {actor_type}/{actor_id}")


# -- delivery: retries, no duplicates, every app -----------------------------------------------------------


def test_an_app_that_is_down_gets_the_token_later_exactly_once(world):
    w = world
    w.receiver.status = 503
    victim = code_flow(browser_for(w.app, IPHONE_SAFARI), w.rp)
    with w.app.app_context():
        assert services_of(w.app).sessions.end(victim["sid"], "ended_by_admin", "system") is True

    [refused] = wait_for_posts(w.receiver, 1)
    assert refused["status"] == 503
    [row] = wait_until(lambda: [r for r in delivery_rows(w.app) if r["attempts"] == 1] or None,
                       what="the failed attempt recorded")
    assert (row["status"], row["last_error"], row["delivered_at"]) == ("pending", "HTTP 503", None)
    assert row["next_attempt_at"] - row["created_at"] >= timedelta(seconds=0.75), "retried later, with backoff"

    w.receiver.status = 200
    w.clock.shift(5)  # past the first backoff (1 s ± 20 %)
    with w.app.app_context():
        assert LogoutDeliverer().deliver_due() == 1
    assert len(w.receiver.requests) == 2
    retried = w.receiver.requests[1]
    assert retried["status"] == 200
    assert logout_token_of(retried) == logout_token_of(refused), "the retry sends the same token"
    verify_logout_token(w.app, logout_token_of(retried), w.rp["client_id"], victim["sid"], w.user_id)
    [row] = delivery_rows(w.app)
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 2, None)
    assert row["delivered_at"] is not None

    # Delivered means done: later passes send nothing, and ending the session again queues nothing.
    w.clock.shift(600)
    with w.app.app_context():
        assert LogoutDeliverer().deliver_due() == 0
        assert LogoutDeliverer().deliver_ids([row["id"]]) == 0
        assert services_of(w.app).sessions.end(victim["sid"], "ended_by_admin", "system") is False
        assert services_of(w.app).sessions.end_all_for_user(w.user_id, "ended_by_admin") == 0
        enqueue_logouts(victim["sid"], w.user_id)
        db.session.commit()
    assert len(delivery_rows(w.app)) == 1, "a session already announced to an app is not queued again"
    assert len(w.receiver.requests) == 2
    ended = session_ended_events(w.app, w.user_id, victim["sid"])
    assert len(ended) == 1, "ending twice is recorded once"


def test_queued_logouts_wait_in_the_outbox_for_a_new_process(world, make_app):
    """With immediate delivery off (a crash right after the commit), the row stays and another
    instance on the same database delivers it."""
    w = world
    w.app.config["IDP_DELIVER_LOGOUTS_IMMEDIATELY"] = False
    victim = code_flow(browser_for(w.app, IPHONE_SAFARI), w.rp)
    response = w.api.delete(f"/api/admin/sessions/{victim['sid']}", w.admin["token"])
    assert response.status_code == 204
    [row] = delivery_rows(w.app)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert w.receiver.requests == []

    settings = services_of(w.app).settings
    restarted = make_app(database_url=settings.database_url, redis_prefix=settings.redis_prefix,
                         session_idle_ttl=IDLE_TTL, access_token_ttl=2 * IDLE_TTL)
    with restarted.app_context():
        assert LogoutDeliverer().deliver_due() == 1
    [post] = w.receiver.requests
    verify_logout_token(restarted, logout_token_of(post), w.rp["client_id"], victim["sid"], w.user_id)
    assert delivery_rows(w.app)[0]["status"] == "delivered"


def test_every_app_of_the_session_gets_its_own_token(world):
    w = world
    camera = register_client(w.app, "Camera app", backchannel_logout_uri=w.receiver.url("/camera"),
                             redirect_uri="https://camera.example/cb")
    door = register_client(w.app, "Door lock app", redirect_uri="https://door.example/cb")  # no back-channel URI
    browser = browser_for(w.app, IPHONE_SAFARI)
    panel_tokens = code_flow(browser, w.rp)
    camera_tokens = code_flow(browser, camera)  # single sign-on: the same session
    door_tokens = code_flow(browser, door)
    assert panel_tokens["sid"] == camera_tokens["sid"] == door_tokens["sid"]
    sid = panel_tokens["sid"]

    response = w.api.delete(f"/api/admin/sessions/{sid}", w.admin["token"])
    assert response.status_code == 204
    posts = {p["path"]: p for p in wait_for_posts(w.receiver, 2)}
    assert set(posts) == {"/backchannel", "/camera"}
    panel = verify_logout_token(w.app, logout_token_of(posts["/backchannel"]), w.rp["client_id"], sid, w.user_id)
    cam = verify_logout_token(w.app, logout_token_of(posts["/camera"]), camera["client_id"], sid, w.user_id)
    assert panel["jti"] != cam["jti"]
    for rp, tokens in ((w.rp, panel_tokens), (camera, camera_tokens), (door, door_tokens)):
        assert_tokens_dead(w.app, rp, tokens)
    rows = wait_until(lambda: (lambda rows: rows if all(r["status"] == "delivered" for r in rows) else None)(
        delivery_rows(w.app)), what="both rows delivered")
    assert sorted(r["client_id"] for r in rows) == sorted([w.rp["client_id"], camera["client_id"]])
    assert len(w.receiver.requests) == 2
