"""The rules of the product. Nothing here reads flask.request; the web rooms pass values in."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from idp.crypto.passwords import Passwords
from idp.services.accounts import Accounts
from idp.services.clients import Clients
from idp.services.grants import Grants
from idp.services.keys import KeyService
from idp.services.sessions import Sessions
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

    @classmethod
    def build(cls, settings: Settings, store: Store) -> Services:
        passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
        keys = KeyService(settings)
        return cls(
            settings=settings,
            store=store,
            passwords=passwords,
            keys=keys,
            accounts=Accounts(settings, store, passwords),
            clients=Clients(settings),
            sessions=Sessions(settings),
            grants=Grants(settings, keys),
        )


def services() -> Services:
    return current_app.extensions["idp"]
