"""SMS through a webhook (POST {"to", "text"}) or, by default, appended to an outbox file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

import requests

from idp.domain.errors import DeliveryUnavailable

log = logging.getLogger("idp.notify")


class SmsSender(Protocol):
    def send(self, to: str, text: str) -> None: ...


class WebhookSms:
    def __init__(self, url: str):
        self.url = url

    def send(self, to: str, text: str) -> None:
        try:
            response = requests.post(self.url, json={"to": to, "text": text}, timeout=10)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise DeliveryUnavailable("We could not send the text message. Please try again in a moment.",
                                     f"sms webhook: {exc}") from exc


class FileSms:
    def __init__(self, path: Path):
        self.path = path

    def send(self, to: str, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"to": to, "text": text}) + "\n")


def create_sms_sender(webhook_url: str | None, instance_dir: Path) -> SmsSender:
    return WebhookSms(webhook_url) if webhook_url else FileSms(instance_dir / "sms" / "outbox.jsonl")
