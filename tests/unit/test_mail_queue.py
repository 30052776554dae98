"""The notice queue: sends in order off the caller's thread, outlives a failing message, and says
when it could not take or finish a message."""

from __future__ import annotations

import logging
import threading

from idp.domain.errors import DeliveryUnavailable
from idp.notify.mail import MailQueue


def _message(n: int) -> dict:
    return {"Subject": f"notice {n}", "To": "owner@example.com"}


class GatedMailer:
    """Refuses the messages named in `refuse`; holds every send until `gate` is set."""

    def __init__(self, refuse=(), crash=()):
        self.sent, self.refuse, self.crash = [], set(refuse), set(crash)
        self.gate = threading.Event()
        self.gate.set()
        self.threads = set()

    def send(self, message):
        self.threads.add(threading.get_ident())
        self.gate.wait(10)
        if message["Subject"] in self.refuse:
            raise DeliveryUnavailable("We could not send the email.", "smtp: 554 refused")
        if message["Subject"] in self.crash:
            raise RuntimeError("template bug")
        self.sent.append(message["Subject"])


def test_messages_go_out_in_order_from_another_thread():
    mailer = GatedMailer()
    notices = MailQueue(mailer)
    for n in range(5):
        notices.submit(_message(n))
    assert notices.drain(10)
    assert mailer.sent == [f"notice {n}" for n in range(5)]
    assert threading.get_ident() not in mailer.threads


def test_a_refused_or_failing_message_is_logged_and_the_rest_still_go(caplog):
    mailer = GatedMailer(refuse={"notice 1"}, crash={"notice 2"})
    notices = MailQueue(mailer)
    with caplog.at_level(logging.ERROR, logger="idp.notify"):
        for n in range(4):
            notices.submit(_message(n))
        assert notices.drain(10)
    assert mailer.sent == ["notice 0", "notice 3"]
    logged = caplog.text
    assert "'notice 1' to owner@example.com not sent: smtp: 554 refused" in logged
    assert "'notice 2' to owner@example.com not sent" in logged


def test_a_full_queue_drops_with_a_log_line_instead_of_blocking_the_request(caplog):
    mailer = GatedMailer()
    mailer.gate.clear()  # the mail server holds its answer
    notices = MailQueue(mailer, capacity=2)
    with caplog.at_level(logging.ERROR, logger="idp.notify"):
        for n in range(5):  # one in the sender's hands, two queued, the rest refused at once
            notices.submit(_message(n))
        assert not notices.drain(0.1)
    assert "mail queue full, not sent: 'notice 4'" in caplog.text
    mailer.gate.set()
    assert notices.drain(10)
    assert len(mailer.sent) in (2, 3) and mailer.sent[0] == "notice 0"
