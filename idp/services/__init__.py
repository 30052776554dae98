"""The rules of the product. Nothing here reads flask.request; the web rooms pass values in."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from idp.crypto.passwords import Passwords
from idp.services.access_tokens import AccessTokenLedger
from idp.services.accounts import Accounts
from idp.services.audit import Audit
from idp.notify.mail import create_mailer
from idp.notify.sms import create_sms_sender
from idp.services.clients import Clients
from idp.services.devices import TrustedDevices
from idp.services.factors import Factors
from idp.services.grants import Grants
from idp.services.keys import KeyService
from idp.services.limits import CodeAttemptLimits
from idp.services.lockouts import Lockouts
from idp.services.new_device import NewDeviceNotices
from idp.services.notifications import Notifier
from idp.services.profiles import UserProfiles
from idp.services.sessions import Sessions
from idp.services.webauthn import WebAuthnService
from idp.settings import Settings
from idp.storage.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    passwords: Passwords
    keys: KeyService
    accounts: Accounts
    clients: Clients
    sessions: Sessions
    grants: Grants
    notifier: Notifier
    factors: Factors
    code_limits: CodeAttemptLimits
    devices: TrustedDevices
    lockouts: Lockouts
    webauthn: WebAuthnService
    audit: Audit
    new_device: NewDeviceNotices
    profiles: UserProfiles

    @classmethod
    def build(cls, settings: Settings, store: Store) -> Services:
        passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism,
                              settings.password_hashes_at_once)
        keys = KeyService(settings)
        notifier = Notifier(settings, create_mailer(settings.mail_url),
                            create_sms_sender(settings.sms_webhook_url, settings.instance_dir))
        sessions = Sessions(settings)
        audit = Audit()
        access_tokens = AccessTokenLedger(settings, store)
        accounts = Accounts(settings, store, passwords)
        return cls(
            settings=settings,
            store=store,
            passwords=passwords,
            keys=keys,
            accounts=accounts,
            clients=Clients(settings, store, access_tokens),
            sessions=sessions,
            grants=Grants(settings, keys, access_tokens),
            notifier=notifier,
            factors=Factors(settings, store, notifier),
            code_limits=CodeAttemptLimits(settings, store),
            devices=TrustedDevices(settings),
            lockouts=Lockouts(settings, store, sessions, notifier, audit),
            webauthn=WebAuthnService(settings, store),
            audit=audit,
            new_device=NewDeviceNotices(settings, store, notifier),
            profiles=UserProfiles(store, accounts.profile),
        )


def services() -> Services:
    return current_app.extensions["idp"]
