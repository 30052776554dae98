"""The database on the hot paths: rows by primary key, plain statements in the request's transaction, and
lone statements outside it."""

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


def execute_core(statement, params=None):
    """A statement on tables or plain columns (no ORM objects in or out), in the request's transaction.

    Session.execute sends every statement through the ORM's execute path (compile-state plugins,
    execute events): about 90 µs more than the connection per statement, and a refresh runs three,
    a sign-in over a dozen. Pending ORM changes are flushed first, as Session.execute's autoflush
    would; an ORM-enabled UPDATE run here does not refresh objects the session holds, so it is for
    rows the request has not loaded."""
    session = db.session
    session.flush()
    return session.connection().execute(statement, params)


def alone(statement, params=None):
    """One statement in autocommit mode on a connection of its own, outside the request's
    transaction: a lone SELECT, or a write that is atomic by itself, then needs no BEGIN and no
    COMMIT or ROLLBACK round trip. Returns (rowcount, first row or None); the connection is back in
    the pool before this returns."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        result = conn.execute(statement, params)
        return result.rowcount, result.first() if result.returns_rows else None
