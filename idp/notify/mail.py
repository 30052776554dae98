"""Email by SMTP (IDP_MAIL_URL=smtp://…) or into a folder of .eml files (file://…)."""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from flask import render_template

from idp.domain.errors import DeliveryUnavailable

log = logging.getLogger("idp.notify")


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> None: ...


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

    def send(self, message: EmailMessage) -> None:
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

    def send(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{formatdate(usegmt=True).replace(' ', '_').replace(',', '')}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(bytes(message))


def create_mailer(mail_url: str) -> Mailer:
    scheme = urlsplit(mail_url).scheme
    if scheme in ("smtp", "smtps"):
        return SmtpMailer(mail_url)
    if scheme == "file":
        return FileMailer(Path(unquote(urlsplit(mail_url).path)))
    raise ValueError(f"IDP_MAIL_URL must be smtp://, smtps:// or file://, got {mail_url!r}")


def compose(template: str, to: str, sender: str, **context) -> EmailMessage:
    """Render templates/email/<template>/{subject.txt, body.txt, body.html}."""
    message = EmailMessage()
    message["Subject"] = render_template(f"email/{template}/subject.txt", **context).strip()
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.split("@")[-1])
    message.set_content(render_template(f"email/{template}/body.txt", **context))
    message.add_alternative(render_template(f"email/{template}/body.html", **context), subtype="html")
    return message
