"""What UserInfo answers from, kept in the shared store behind a version per user.

UserInfo is asked on every API call an app checks; the profile behind it changes rarely. Reading it
from the database cost half of each UserInfo answer, so a copy lives in the shared store next to the
access-token state, and the round trip that checks the token also fetches the copy and the user's
version:

- `user-version:<id>` — changed after every commit that changes the user's row;
- `users-epoch` — changed after any statement that updates or deletes users in bulk;
- `user-profile:<id>` — the columns UserInfo needs, with the versions they were read under.

A copy is used only when both versions it was read under are the current ones. The versions are read
before the database is (in the token check's round trip) and changed only after the commit, so a copy
written from a row older than a change always carries a version older than that change, and is
never used once the change's new version is written. A missing version (first use, an emptied store)
means the copy is not used: the row is read, and a version is started for the next request.

If the store fails between a commit and the version change, the copy could outlive the change; each
copy also expires on its own after PROFILE_TTL, which bounds that.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace

from flask import current_app
from sqlalchemy import event, inspect

from idp.crypto.secrets import random_token
from idp.storage.models import User

EPOCH_KEY = "users-epoch"
PROFILE_TTL = 300
_VERSION_TTL = 30 * 24 * 3600
# The columns of idp.services.accounts._PROFILE: what UserInfo's claims and `can_sign_in` read.
_TIMES = ("updated_at", "disabled_at", "locked_at")
_VALUES = ("id", "name", "email", "email_verified", "phone", "phone_verified")


def version_key(user_id: str) -> str:
    return f"user-version:{user_id}"


def profile_key(user_id: str) -> str:
    return f"user-profile:{user_id}"


def _epoch_seconds(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _as_time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, timezone.utc) if value is not None else None


class UserProfiles:
    def __init__(self, store, read_row):
        self._store = store
        self._read_row = read_row  # user id -> the profile row, or None

    @staticmethod
    def keys(user_id: str) -> tuple[str, str, str]:
        """What to fetch in the token check's round trip, in the order `profile` takes them."""
        return EPOCH_KEY, version_key(user_id), profile_key(user_id)

    def profile(self, user_id: str, fetched: list[str | None]):
        """The profile of `user_id`, from the copy when `fetched` (the values of `keys`) says it is
        current, else from the database; None for a user that does not exist."""
        epoch, version, copy = fetched
        if epoch is not None and version is not None and copy is not None:
            data = json.loads(copy)
            if data.pop("read_under") == [epoch, version]:
                data.update({name: _as_time(data[name]) for name in _TIMES})
                return SimpleNamespace(**data)
        row = self._read_row(user_id)
        if row is None:
            return None
        if epoch is None or version is None:
            if epoch is None:
                self._store.add(EPOCH_KEY, random_token(9), _VERSION_TTL)
            if version is None:
                self._store.add(version_key(user_id), random_token(9), _VERSION_TTL)
            return row
        data = {name: getattr(row, name) for name in _VALUES}
        data.update({name: _epoch_seconds(getattr(row, name)) for name in _TIMES})
        data["read_under"] = [epoch, version]
        self._store.set(profile_key(user_id), json.dumps(data, separators=(",", ":")), PROFILE_TTL)
        return row

    def changed(self, user_ids, everyone: bool = False) -> None:
        if everyone:
            self._store.set(EPOCH_KEY, random_token(9), _VERSION_TTL)
        if user_ids:
            self._store.set_many({version_key(user_id): random_token(9) for user_id in user_ids}, _VERSION_TTL)


_CHANGED, _BULK = "idp.users_changed", "idp.users_changed_in_bulk"


_tracked: set[int] = set()


def track_user_changes(scoped_session) -> None:
    """Change the versions after every commit that changed users, whichever code changed them: rows
    changed through the ORM are seen at flush, UPDATE and DELETE statements on users at execution.
    Once per process: the listeners serve every app, each reaching its own store."""
    if id(scoped_session) in _tracked:
        return
    _tracked.add(id(scoped_session))

    @event.listens_for(scoped_session, "after_flush")
    def _note_rows(session, _flush_context):
        # Still the state before the flush here: `new`, `dirty` and `deleted` list what this flush wrote
        # (a new user gets a version at once, so even its first UserInfo answer leaves a copy).
        changed = {obj.id for obj in session.dirty if isinstance(obj, User) and session.is_modified(obj)}
        changed.update(obj.id for obj in (*session.new, *session.deleted) if isinstance(obj, User))
        if changed:
            session.info.setdefault(_CHANGED, set()).update(changed)

    @event.listens_for(scoped_session, "do_orm_execute")
    def _note_statements(state):
        if (state.is_update or state.is_delete) and state.bind_mapper is inspect(User):
            state.session.info[_BULK] = True

    @event.listens_for(scoped_session, "after_commit")
    def _change_versions(session):
        changed, bulk = session.info.pop(_CHANGED, None), session.info.pop(_BULK, False)
        if changed or bulk:
            current_app.extensions["idp"].profiles.changed(changed, everyone=bulk)

    @event.listens_for(scoped_session, "after_rollback")
    def _forget(session):
        session.info.pop(_CHANGED, None)
        session.info.pop(_BULK, None)
