"""Composed messages read back by a standards parser as the person's mail client would: subject,
addresses, both bodies, in ASCII and beyond."""

from __future__ import annotations

import email
from email.policy import default as default_policy
from email.utils import parseaddr

import pytest
from flask import Flask

from idp.notify.mail import compose
from idp.settings import PROJECT_ROOT

CONTEXT = {"product": "idp", "issuer": "https://idp.example", "time": "2026-11-24 05:00 UTC",
           "device": "Apple iPhone · iOS 17.4 · Mobile Safari 17.4", "ip": "198.51.100.7",
           "end_url": "https://idp.example/account/sessions/end-link/abc"}


@pytest.fixture
def templates():
    app = Flask("mail-test", template_folder=str(PROJECT_ROOT / "templates"))
    with app.app_context():
        yield app


def _read_back(message) -> email.message.EmailMessage:
    return email.message_from_bytes(bytes(message), policy=default_policy)


@pytest.mark.parametrize("to, sender", [
    ("zoe@example.com", "idp@example.com"),
    ("zoe@example.com", "Alarm Co. Sign-in <idp@example.com>"),
    ("zoë@exämple.com", "Société d'alarme <idp@example.com>"),  # beyond ASCII: the other composer
])
def test_the_new_device_notice_reads_back_whole(templates, to, sender):
    message = compose("new_device_sign_in", to, sender, **CONTEXT)
    parsed = _read_back(message)
    for header, value in (("To", to), ("From", sender)):
        [address] = parsed[header].addresses
        assert (address.display_name, address.addr_spec) == parseaddr(value)
    assert parsed["Subject"] and "\n" not in parsed["Subject"]
    assert parsed["Date"] and parsed["Message-ID"].endswith("@example.com>")
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    html = parsed.get_body(preferencelist=("html",)).get_content()
    # Non-ASCII text survives the transfer encoding in both bodies.
    assert "Device: Apple iPhone · iOS 17.4 · Mobile Safari 17.4" in text
    assert "Apple iPhone · iOS 17.4 · Mobile Safari 17.4" in html
    assert CONTEXT["end_url"] in text and f'href="{CONTEXT["end_url"]}"' in html


def test_a_subject_beyond_ascii_is_encoded_and_reads_back(templates, monkeypatch):
    import idp.notify.mail as mail

    real = mail.render_template

    def with_accented_subject(name, **context):
        return "Nouvelle connexion à votre compte — idp\n" if name.endswith("subject.txt") else real(name, **context)

    monkeypatch.setattr(mail, "render_template", with_accented_subject)
    message = compose("new_device_sign_in", "zoe@example.com", "idp@example.com", **CONTEXT)
    raw = bytes(message)
    assert raw.isascii(), "headers and bodies go out 7-bit clean"
    assert _read_back(message)["Subject"] == "Nouvelle connexion à votre compte — idp"
