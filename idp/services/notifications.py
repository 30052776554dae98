"""Sends the product's messages; the transport (SMTP, file, webhook) is chosen by settings."""

from __future__ import annotations

from idp.notify.mail import Mailer, compose
from idp.notify.sms import SmsSender
from idp.storage.models import utcnow


class Notifier:
    def __init__(self, settings, mailer: Mailer, sms: SmsSender):
        self._settings = settings
        self.mailer = mailer
        self.sms_sender = sms

    def email(self, to: str, template: str, **context) -> None:
        context.setdefault("product", self._settings.product_name)
        context.setdefault("issuer", self._settings.issuer)
        context.setdefault("time", utcnow().strftime("%Y-%m-%d %H:%M UTC"))
        self.mailer.send(compose(template, to, self._settings.mail_from, **context))

    def sms(self, to: str, text: str) -> None:
        self.sms_sender.send(to, text)
