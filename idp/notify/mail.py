"""Email by SMTP (IDP_MAIL_URL=smtp://…) or into a folder of .eml files (file://…)."""

from __future__ import annotations

import logging
import os
import queue
import smtplib
import ssl
import threading
import time
import uuid
from email.charset import QP, Charset
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from flask import render_template

from idp.domain.errors import DeliveryUnavailable, ServiceUnavailable

log = logging.getLogger("idp.notify")


class Mailer(Protocol):
    def send(self, message: Message) -> None: ...


class SmtpMailer:
    def __init__(self, url: str):
        parts = urlsplit(url)
        options = parse_qs(parts.query)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.implicit_tls = parts.scheme == "smtps"
        self.starttls = options.get("starttls", ["0"])[0] in ("1", "true", "yes")
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    def send(self, message: Message) -> None:
        try:
            if self.implicit_tls:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=10, context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=10)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryUnavailable("We could not send the email. Please try again in a moment.",
                                     f"smtp {self.host}:{self.port}: {exc}") from exc


class FileMailer:
    """The embedded default: every message becomes one .eml file a newcomer can open."""

    def __init__(self, directory: Path):
        self.directory = directory

    def send(self, message: Message) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{formatdate(usegmt=True).replace(' ', '_').replace(',', '')}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(bytes(message))


class MailQueue:
    """Sends messages on a thread of its own, so that a slow or unreachable mail server never holds
    up the request that queued them (an SMTP server that drops packets costs its 10-second timeout).

    For notices of something that already happened (a new device, a locked account, a changed
    address), which nobody waits for. Like sending them in the request, it is at most once: a
    message the server refuses, or one still queued when the process is killed, is logged, not
    retried. Codes a person is waiting for are sent in the request, which reports a failure."""

    def __init__(self, mailer: Mailer, capacity: int = 1000):
        self._mailer = mailer
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def submit(self, message: Message) -> None:
        self._ensure_sender()
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            log.error("mail queue full, not sent: %r to %s", message["Subject"], message["To"])

    def drain(self, timeout: float) -> bool:
        """Wait until every message queued so far was handed over (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def _ensure_sender(self) -> None:
        # Started on first use in the process that sends: a thread does not survive gunicorn's fork.
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._send_forever, name="idp-mail", daemon=True)
                self._thread.start()
                self._pid = os.getpid()

    def _send_forever(self) -> None:
        while True:
            message = self._queue.get()
            try:
                self._mailer.send(message)
            except ServiceUnavailable as unavailable:
                log.error("%r to %s not sent: %s", message["Subject"], message["To"], unavailable.detail)
            except Exception:  # noqa: BLE001  the sender must outlive any one message
                log.exception("%r to %s not sent", message["Subject"], message["To"])
            finally:
                self._queue.task_done()


def create_mailer(mail_url: str) -> Mailer:
    scheme = urlsplit(mail_url).scheme
    if scheme in ("smtp", "smtps"):
        return SmtpMailer(mail_url)
    if scheme == "file":
        return FileMailer(Path(unquote(urlsplit(mail_url).path)))
    raise ValueError(f"IDP_MAIL_URL must be smtp://, smtps:// or file://, got {mail_url!r}")


def compose(template: str, to: str, sender: str, **context) -> Message:
    """Render templates/email/<template>/{subject.txt, body.txt, body.html} into one
    multipart/alternative message, text bodies in quoted-printable UTF-8."""
    subject = render_template(f"email/{template}/subject.txt", **context).strip()
    text = render_template(f"email/{template}/body.txt", **context)
    html = render_template(f"email/{template}/body.html", **context)
    if not (to.isascii() and sender.isascii()):
        # Addresses beyond ASCII need the modern policy's handling; rare, so its cost does not matter.
        return _compose_with_default_policy(subject, to, sender, text, html)
    # The classic MIME classes: the default policy parses every header it is given, which made
    # composing a notice cost 2 ms of the sign-in it announces (12 × these).
    message = MIMEMultipart("alternative")
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].split("@")[-1])
    message.attach(MIMEText(text, "plain", _UTF8_QUOTED_PRINTABLE))
    message.attach(MIMEText(html, "html", _UTF8_QUOTED_PRINTABLE))
    return message


def _compose_with_default_policy(subject: str, to: str, sender: str, text: str, html: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].split("@")[-1])
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


_UTF8_QUOTED_PRINTABLE = Charset("utf-8")
_UTF8_QUOTED_PRINTABLE.body_encoding = QP
