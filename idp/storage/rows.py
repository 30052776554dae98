"""Rows by primary key on the request's database session, for the lookups every request makes."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm.util import identity_key

from idp.extensions import db

_BY_PRIMARY_KEY: dict[type, object] = {}


def row_by_id(model: type, value):
    """What `db.session.get(model, value)` does for a one-column primary key, with the SELECT built
    once per model: Session.get built its statement anew on every call, and a sign-in makes several.
    A row the session already holds comes back without a query."""
    if value is None:
        return None
    present = db.session.identity_map.get(identity_key(model, value))
    if present is not None:
        return present
    statement = _BY_PRIMARY_KEY.get(model)
    if statement is None:
        [column] = model.__mapper__.primary_key
        statement = _BY_PRIMARY_KEY[model] = select(model).where(column == bindparam("primary_key"))
    return db.session.execute(statement, {"primary_key": value}).scalar_one_or_none()
