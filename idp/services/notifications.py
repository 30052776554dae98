"""Sends the product's messages; the transport (SMTP, file, webhook) is chosen by settings."""

from __future__ import annotations

from idp.notify.mail import Mailer, MailQueue, compose
from idp.notify.sms import SmsSender
from idp.storage.models import utcnow


class Notifier:
    def __init__(self, settings, mailer: Mailer, sms: SmsSender):
        self._settings = settings
        self.mailer = mailer
        self.notices = MailQueue(mailer)
        self.sms_sender = sms

    def email(self, to: str, template: str, **context) -> None:
        """Sent before this returns; DeliveryUnavailable if the mail server did not take it."""
        self.mailer.send(self._compose(to, template, context))

    def email_notice(self, to: str, template: str, **context) -> None:
        """Composed now, sent after the request on the notice queue (see MailQueue); never raises
        for delivery."""
        self.notices.submit(self._compose(to, template, context))

    def _compose(self, to: str, template: str, context: dict):
        context.setdefault("product", self._settings.product_name)
        context.setdefault("issuer", self._settings.issuer)
        context.setdefault("time", utcnow().strftime("%Y-%m-%d %H:%M UTC"))
        return compose(template, to, self._settings.mail_from, **context)

    def sms(self, to: str, text: str) -> None:
        self.sms_sender.send(to, text)
