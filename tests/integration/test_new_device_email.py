"""The new-device email of SPEC §6.5, through a real SMTP server: the first sign-in on a browser is
announced with device, IP and time and a single-use link that ends exactly that session; a browser
seen before is not announced again."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from tests.integration.mfa_support import (
    EMAIL,
    create_user,
    error_text,
    is_signed_in,
    password_step,
    services_of,
    sign_out,
)
from tests.integration.session_support import (
    IPHONE_SAFARI,
    LINUX_CHROME,
    WINDOWS_FIREFOX,
    browser_for,
    end_link_path,
    session_ended_events,
    session_row,
)
from tests.receivers import free_port
from tests.support import IsolatedClient, csrf_from

SUBJECT = "New sign-in to your idp account"
USED_LINK = "This link has expired or was already used."


def _session_id(app, user_id: str, address: str) -> str:
    with app.app_context():
        [session] = [s for s in services_of(app).sessions.active_for_user(user_id) if s.ip == address]
        return session.id


def _announcements(sink, count: int) -> list:
    messages = sink.wait_for(count, subject_contains="New sign-in")
    assert len(messages) == count, [m["Subject"] for m in sink.messages]
    return messages


def test_first_sign_in_on_a_browser_is_announced_and_its_link_ends_exactly_that_session(make_app, smtp_server):
    app = make_app(mail_url=smtp_server.url)
    app.test_client_class = IsolatedClient
    user_id = create_user(app)
    sink = smtp_server.sink

    laptop = browser_for(app, LINUX_CHROME, "203.0.113.20")
    assert password_step(laptop).status_code == 303
    [laptop_mail] = _announcements(sink, 1)
    phone = browser_for(app, IPHONE_SAFARI, "198.51.100.7")
    before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    assert password_step(phone).status_code == 303
    message = _announcements(sink, 2)[1]

    assert message["Subject"] == SUBJECT and message["To"] == EMAIL
    text = sink.text_of(message).replace("\r\n", "\n")
    assert "Device: Apple iPhone · iOS 17.4 · Mobile Safari 17.4\n" in text
    assert "IP address: 198.51.100.7\n" in text
    stamp = re.search(r"^Time: (\d{4}-\d\d-\d\d \d\d:\d\d) UTC$", text, re.M)
    assert stamp, text
    sent_at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
    assert before <= sent_at <= datetime.now(timezone.utc)
    path = end_link_path(text)
    html = message.get_body(preferencelist=("html",)).get_content()
    assert f'href="http://localhost:5000{path}"' in html
    assert "Apple iPhone · iOS 17.4 · Mobile Safari 17.4" in html and "198.51.100.7" in html
    laptop_text = sink.text_of(laptop_mail).replace("\r\n", "\n")
    assert "Device: Linux · Chrome 124.0\n" in laptop_text and "IP address: 203.0.113.20\n" in laptop_text
    assert end_link_path(laptop_text) != path

    # The same browser signing in again is not announced.
    sign_out(laptop)
    assert password_step(laptop).status_code == 303
    assert services_of(app).notifier.notices.drain(10)
    assert len([m for m in sink.messages if "New sign-in" in m["Subject"]]) == 2

    # The link: a GET only shows a button (mail scanners follow links); it ends nothing.
    phone_session = _session_id(app, user_id, "198.51.100.7")
    shown = laptop.get(path)
    assert shown.status_code == 200
    page = shown.get_data(as_text=True)
    assert '<form method="post">' in page and "End the session</button>" in page
    assert is_signed_in(phone)

    # The POST ends exactly that session, from any browser; the one reading the mail stays signed in.
    ended = laptop.post(path, data={"csrf_token": csrf_from(page)})
    assert ended.status_code == 200
    assert "The session was ended and its apps signed out." in ended.get_data(as_text=True)
    assert not is_signed_in(phone)
    assert is_signed_in(laptop)
    assert session_row(app, phone_session)["end_reason"] == "ended_by_email_link"
    assert session_ended_events(app, user_id, phone_session) == [
        {"actor_type": "user", "actor_id": user_id, "details": {"reason": "ended_by_email_link"}}]

    # Single use.
    again = laptop.post(path, data={"csrf_token": csrf_from(page)})
    assert again.status_code == 400 and error_text(again) == USED_LINK
    shown_again = laptop.get(path)
    assert shown_again.status_code == 400 and error_text(shown_again) == USED_LINK
    assert is_signed_in(laptop)

    # The laptop's own link names a session that was signed out meanwhile: it says so and ends nothing else.
    old_link = end_link_path(laptop_text)
    shown = laptop.get(old_link)
    assert shown.status_code == 200 and "That session had already ended" in shown.get_data(as_text=True)
    assert "End the session</button>" not in shown.get_data(as_text=True)
    used = laptop.post(old_link, data={"csrf_token": csrf_from(page)})
    assert used.status_code == 200 and "That session had already ended" in used.get_data(as_text=True)
    assert is_signed_in(laptop)

    # Links that never were: no session to end.
    for bogus in ("/account/sessions/end-link/" + "A" * 43, "/account/sessions/end-link/" + "x" * 500):
        assert laptop.get(bogus).status_code == 400
        refused = laptop.post(bogus, data={"csrf_token": csrf_from(page)})
        assert refused.status_code == 400 and error_text(refused) == USED_LINK
    assert is_signed_in(laptop)


def test_a_mail_server_that_is_down_does_not_stop_the_sign_in(make_app):
    app = make_app(mail_url=f"smtp://127.0.0.1:{free_port()}")
    app.test_client_class = IsolatedClient
    create_user(app)
    browser = browser_for(app, WINDOWS_FIREFOX, "192.0.2.5")
    signed = password_step(browser)
    assert signed.status_code == 303 and signed.headers["Location"] == "/account"
    assert is_signed_in(browser)
    assert services_of(app).notifier.notices.drain(10)  # the failed send is logged, nothing is left queued


def test_the_sign_in_does_not_wait_for_the_mail_server(make_app, smtp_server):
    """The notice goes out after the answer: a mail server that holds its reply holds up no one."""
    app = make_app(mail_url=smtp_server.url)
    app.test_client_class = IsolatedClient
    create_user(app)
    sink = smtp_server.sink
    sink.answering.clear()
    try:
        browser = browser_for(app, WINDOWS_FIREFOX, "192.0.2.9")
        signed = password_step(browser)
        assert signed.status_code == 303 and is_signed_in(browser)
        assert sink.messages == []  # the mail server has not answered yet
        assert not services_of(app).notifier.notices.drain(0.2)
    finally:
        sink.answering.set()
    [notice] = _announcements(sink, 1)
    assert "192.0.2.9" in sink.text_of(notice)
    assert services_of(app).notifier.notices.drain(10)
