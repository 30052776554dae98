"""Wrong second-factor codes: the per-IP block, the account lock and its emailed unlock link, counters
shared by every instance through Redis, and refusal (never a bypass) when Redis is down.

Contract: SPEC §6.3; CONFORMANCE C07/C08 (failures rate-limited), D07 (lockouts are undone by the
owner), D08 (a locked account gets the same answer as a wrong password).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.mfa_support import (  # noqa: F401  (clock is a fixture)
    EMAIL,
    GENERIC_FAILURE,
    SESSION_COOKIE,
    STORE_DOWN,
    UI_COOKIE,
    WRONG_CODE,
    clock,
    copy_cookie,
    create_user,
    enrol_totp,
    error_text,
    ip,
    is_signed_in,
    new_browser,
    password_step,
    second_factor_page,
    services_of,
    set_cookie_header,
    sign_in_with_totp,
    submit_code,
    to_second_factor,
)
from tests.support import csrf_from

BLOCKED_IP = "198.51.100.7"
OTHER_IP = "203.0.113.9"
IP_BLOCKED_NOW = "Too many wrong codes from your network. Try again in 10 minutes."
IP_STILL_BLOCKED = "Too many wrong codes from your network. Try again in 10 minutes."
ONLY_POSTGRES = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def _block(browser, phone, address: str = BLOCKED_IP) -> None:
    """Three wrong codes from one address: two plain refusals, then the block."""
    csrf = csrf_from(second_factor_page(browser, **ip(address)).get_data(as_text=True))
    for _ in range(2):
        wrong = submit_code(browser, phone.wrong_code(), csrf=csrf, **ip(address))
        assert (wrong.status_code, error_text(wrong)) == (200, WRONG_CODE)
    third = submit_code(browser, phone.wrong_code(), csrf=csrf, **ip(address))
    assert (third.status_code, error_text(third)) == (429, IP_BLOCKED_NOW)


def test_three_wrong_codes_block_the_ip_even_for_the_right_code(app, clock):
    phone = enrol_totp(app, create_user(app), clock)
    browser = new_browser(app)
    to_second_factor(browser, **ip(BLOCKED_IP))
    _block(browser, phone)

    csrf = csrf_from(second_factor_page(browser, **ip(BLOCKED_IP)).get_data(as_text=True))
    right = submit_code(browser, phone.next_code(), csrf=csrf, **ip(BLOCKED_IP))
    assert (right.status_code, error_text(right)) == (429, IP_STILL_BLOCKED)
    assert set_cookie_header(right, SESSION_COOKIE) is None
    assert not is_signed_in(browser)
    with app.app_context():
        remaining = services_of(app).store.ttl(f"codeblock:ip:{BLOCKED_IP}")
    assert remaining is not None and 590 <= remaining <= 600, remaining

    # Another person behind the same address is blocked too; the block is on the address.
    bob_phone = enrol_totp(app, create_user(app, email="bob@example.com"), clock)
    bob = new_browser(app)
    to_second_factor(bob, email="bob@example.com", **ip(BLOCKED_IP))
    bobs = submit_code(bob, bob_phone.next_code(), **ip(BLOCKED_IP))
    assert (bobs.status_code, error_text(bobs)) == (429, IP_STILL_BLOCKED)

    # The same flow, from another address, goes through with a right code.
    elsewhere = submit_code(browser, phone.totp.now(), csrf=csrf, **ip(OTHER_IP))
    assert elsewhere.status_code == 303, (elsewhere.status_code, error_text(elsewhere))
    assert is_signed_in(browser)


def test_the_ip_block_ends_after_its_time(make_app, clock):
    app = make_app(code_ip_block_seconds=2)
    phone = enrol_totp(app, create_user(app), clock)
    browser = new_browser(app)
    to_second_factor(browser, **ip(BLOCKED_IP))
    csrf = csrf_from(second_factor_page(browser, **ip(BLOCKED_IP)).get_data(as_text=True))
    for _ in range(2):
        assert submit_code(browser, phone.wrong_code(), csrf=csrf, **ip(BLOCKED_IP)).status_code == 200
    third = submit_code(browser, phone.wrong_code(), csrf=csrf, **ip(BLOCKED_IP))
    assert third.status_code == 429
    held = submit_code(browser, phone.next_code(), csrf=csrf, **ip(BLOCKED_IP))
    assert held.status_code == 429
    time.sleep(2.2)
    assert submit_code(browser, phone.totp.now(), csrf=csrf, **ip(BLOCKED_IP)).status_code == 303


def _unlock_link(sink) -> tuple[str, object]:
    messages = sink.wait_for(1, subject_contains="account was locked")
    assert len(messages) == 1, [m["Subject"] for m in sink.messages]
    text = sink.text_of(messages[0])
    match = re.search(r"http://localhost:5000(/unlock/[A-Za-z0-9_-]{32,})\s", text)
    assert match, text
    return match.group(1), messages[0]


def _normalised(html: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]+"', 'name="csrf_token" value="CSRF"', html)


def test_four_wrong_codes_from_different_addresses_lock_the_account(make_app, smtp_server, clock):
    app = make_app(mail_url=smtp_server.url)
    user_id = create_user(app)
    phone = enrol_totp(app, user_id, clock)
    signed_in_elsewhere = new_browser(app)
    sign_in_with_totp(signed_in_elsewhere, phone)

    # Two browsers, four addresses, one wrong code each: no address is blocked, the account is.
    first, second = new_browser(app), new_browser(app)
    to_second_factor(first)
    to_second_factor(second)
    for browser, address in ((first, "192.0.2.1"), (first, "192.0.2.2"), (second, "192.0.2.3")):
        wrong = submit_code(browser, phone.wrong_code(), **ip(address))
        assert (wrong.status_code, error_text(wrong)) == (200, WRONG_CODE), address
    locked = submit_code(second, phone.wrong_code(), **ip("192.0.2.4"))
    assert locked.status_code == 403
    body = locked.get_data(as_text=True)
    assert "<h1>Your account is locked</h1>" in body
    assert "every session has been signed out" in body

    assert not is_signed_in(signed_in_elsewhere), "locking ends every session of the account"
    # The other pending sign-in cannot finish either, even with the right code.
    csrf = csrf_from(first.get("/login").get_data(as_text=True))
    refused = first.post("/login/2fa", data={"csrf_token": csrf, "method": "totp", "code": phone.next_code()},
                         **ip("192.0.2.5"))
    assert refused.status_code == 302 and refused.headers["Location"] == "/login?expired=1"
    assert not is_signed_in(first)

    path, message = _unlock_link(smtp_server.sink)
    assert message["To"] == EMAIL
    assert "192.0.2.4" in smtp_server.sink.text_of(message)

    # D08: the right password for a locked account reads exactly like a wrong password.
    locked_try, wrong_try = new_browser(app), new_browser(app)
    with_right_password = password_step(locked_try)
    with_wrong_password = password_step(wrong_try, password="not the password at all")
    assert with_right_password.status_code == with_wrong_password.status_code == 200
    assert error_text(with_right_password) == GENERIC_FAILURE
    assert _normalised(with_right_password.get_data(as_text=True)) == _normalised(
        with_wrong_password.get_data(as_text=True))
    assert not is_signed_in(locked_try)

    # The emailed link: a GET only shows a button (mail scanners follow links), a POST unlocks, once.
    owner = new_browser(app)
    shown = owner.get(path)
    assert shown.status_code == 200
    page = shown.get_data(as_text=True)
    assert '<form method="post">' in page and "Unlock my account</button>" in page
    assert "Your account is unlocked" not in page
    assert password_step(new_browser(app)).status_code == 200, "a GET must not unlock"
    unlocked = owner.post(path, data={"csrf_token": csrf_from(page)})
    assert unlocked.status_code == 200
    assert "Your account is unlocked. You can sign in again." in unlocked.get_data(as_text=True)
    again = owner.post(path, data={"csrf_token": csrf_from(page)})
    assert again.status_code == 400
    assert error_text(again) == "This link has expired or was already used."

    # The sessions were ended, not just hidden while the account was locked.
    assert not is_signed_in(signed_in_elsewhere)
    with app.app_context():
        assert services_of(app).sessions.active_for_user(user_id) == []
    sign_in_with_totp(owner, phone)
    assert is_signed_in(owner)


def test_a_correct_code_resets_the_consecutive_count(app, clock):
    phone = enrol_totp(app, create_user(app), clock)
    for round_ in range(2):
        browser = new_browser(app)
        to_second_factor(browser)
        for n, address in enumerate(("192.0.2.1", "192.0.2.2", "192.0.2.3")):
            wrong = submit_code(browser, phone.wrong_code(), **ip(address))
            assert (wrong.status_code, error_text(wrong)) == (200, WRONG_CODE), (round_, n)
        assert submit_code(browser, phone.next_code(), **ip("192.0.2.9")).status_code == 303


@ONLY_POSTGRES
def test_the_ip_block_holds_across_two_instances_sharing_redis(make_app, clock):
    one = make_app()
    two = make_app(redis_prefix=services_of(one).settings.redis_prefix)
    phone = enrol_totp(one, create_user(one), clock)

    # One browser behind a load balancer: its cookies go to whichever instance answers.
    on_one, on_two = new_browser(one), new_browser(two)
    to_second_factor(on_one, **ip(BLOCKED_IP))
    csrf = csrf_from(second_factor_page(on_one, **ip(BLOCKED_IP)).get_data(as_text=True))
    for _ in range(2):
        wrong = submit_code(on_one, phone.wrong_code(), csrf=csrf, **ip(BLOCKED_IP))
        assert (wrong.status_code, error_text(wrong)) == (200, WRONG_CODE)
    copy_cookie(on_one, on_two, UI_COOKIE)
    third = submit_code(on_two, phone.wrong_code(), csrf=csrf, **ip(BLOCKED_IP))
    assert (third.status_code, error_text(third)) == (429, IP_BLOCKED_NOW), "instance two saw one's failures"

    right = submit_code(on_one, phone.next_code(), csrf=csrf, **ip(BLOCKED_IP))
    assert (right.status_code, error_text(right)) == (429, IP_STILL_BLOCKED), "instance one saw two's block"
    assert not is_signed_in(on_one)
    assert submit_code(on_two, phone.totp.now(), csrf=csrf, **ip(OTHER_IP)).status_code == 303


@ONLY_POSTGRES
def test_redis_down_refuses_codes_instead_of_letting_them_through(make_app, clock):
    up = make_app()
    down = make_app(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    phone = enrol_totp(up, create_user(up), clock)

    # The password step already refuses, with a clear message and no session.
    cut_off = new_browser(down)
    refused = password_step(cut_off)
    assert refused.status_code == 503
    assert error_text(refused) == STORE_DOWN
    assert set_cookie_header(refused, SESSION_COOKIE) is None

    # A sign-in that reached the code step while Redis was up, then lands on an instance without it.
    browser = new_browser(up)
    to_second_factor(browser)
    csrf = csrf_from(second_factor_page(browser).get_data(as_text=True))
    copy_cookie(browser, cut_off, UI_COOKIE)
    code = phone.next_code()
    for attempt in (submit_code(cut_off, code, csrf=csrf), cut_off.get("/login/2fa")):
        assert attempt.status_code == 503, (attempt.status_code, attempt.headers.get("Location"))
        assert "temporarily unavailable" in attempt.get_data(as_text=True).lower()
        assert STORE_DOWN in attempt.get_data(as_text=True)
        assert set_cookie_header(attempt, SESSION_COOKIE) is None
    assert not is_signed_in(cut_off)
    # The refusal was the outage, not the code: on an instance with Redis the same code works.
    assert submit_code(browser, code, csrf=csrf).status_code == 303


def test_counters_unreachable_mid_sign_in_refuse_the_right_code(app, clock):
    """Redis can drop between two calls: the flow was read, the attempt counters cannot be. The
    limiter is handed a store on a closed port (the services take their store as a parameter)."""
    from idp.services.limits import CodeAttemptLimits
    from idp.storage.store import RedisStore

    phone = enrol_totp(app, create_user(app), clock)
    browser = new_browser(app)
    to_second_factor(browser)
    csrf = csrf_from(second_factor_page(browser).get_data(as_text=True))
    svc = services_of(app)
    working = svc.code_limits
    svc.code_limits = CodeAttemptLimits(svc.settings, RedisStore("redis://127.0.0.1:1/0"))
    try:
        code = phone.next_code()
        right = submit_code(browser, code, csrf=csrf)
        assert (right.status_code, error_text(right)) == (503, STORE_DOWN)
        assert set_cookie_header(right, SESSION_COOKIE) is None
        wrong = submit_code(browser, phone.wrong_code(), csrf=csrf)
        assert (wrong.status_code, error_text(wrong)) == (503, STORE_DOWN)
        assert not is_signed_in(browser)
    finally:
        svc.code_limits = working
    # Back to normal, the flow goes on with a new code.
    assert submit_code(browser, phone.next_code(), csrf=csrf).status_code == 303
