"""The database on the hot paths: rows by primary key, plain statements in the request's transaction, and
lone statements outside it."""

from __future__ import annotations

import weakref

from psycopg.pq import ExecStatus, TransactionStatus
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError, StatementError
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


def alone(statement, params=None) -> tuple[int, dict | None]:
    """One statement in autocommit mode on a connection of its own, outside the request's
    transaction: a lone SELECT, or a write that is atomic by itself, then needs no BEGIN and no
    COMMIT or ROLLBACK round trip. Returns (rowcount, the first row as {column label: value}, or
    None); the connection is back in the pool before this returns.

    On PostgreSQL the statement, compiled once, goes straight to the driver on a pooled connection:
    SQLAlchemy's execution context and result objects cost 200-300 µs of CPU a statement, more
    than the driver and the round trip together, and a refresh runs two of these. The driver
    returns every column type these statements read as SQLAlchemy would (tests/integration/
    test_lone_statements.py compares the two), and its errors reach the caller as SQLAlchemy's."""
    engine = db.engine
    if engine.dialect.name != "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            result = conn.execute(statement, params)
            row = result.first() if result.returns_rows else None
            return result.rowcount, dict(row._mapping) if row is not None else None
    return _alone_on_driver(engine, statement, params or {})


class _Prepared:
    """A statement compiled for one engine's dialect, with what running it on the driver needs."""

    def __init__(self, statement, dialect):
        self.statement = statement  # held, so the id() it is cached under is never reused
        self.compiled = statement.compile(dialect=dialect)
        self.sql = str(self.compiled)
        self.bind_processors = dict(self.compiled._bind_processors)
        self.labels: tuple[str, ...] | None = None  # the result's column names, read off its first run

    def parameters(self, params: dict) -> dict:
        values = self.compiled.construct_params(params)
        try:
            for name, process in self.bind_processors.items():
                if name in values:
                    values[name] = process(values[name])
        except Exception as error:  # a value its column type refuses, as SQLAlchemy reports it
            raise StatementError(str(error), self.sql, params, error) from error
        return values


_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # dialect -> {id(statement): _Prepared}


def _prepared(statement, dialect) -> _Prepared:
    by_statement = _PREPARED.setdefault(dialect, {})
    prepared = by_statement.get(id(statement))
    if prepared is None:
        prepared = by_statement[id(statement)] = _Prepared(statement, dialect)
    return prepared


def _alone_on_driver(engine, statement, params: dict) -> tuple[int, dict | None]:
    prepared = _prepared(statement, engine.dialect)
    values = prepared.parameters(params)
    pooled = engine.raw_connection()  # checkout events run: the idle-connection ping among them
    driver = pooled.driver_connection
    try:
        driver.autocommit = True
        cursor = driver.execute(prepared.sql, values)
        if cursor.pgresult.status != ExecStatus.TUPLES_OK:
            return cursor.rowcount, None
        if prepared.labels is None:
            # The driver builds a description object per column each time it is asked: once is enough.
            prepared.labels = tuple(column.name for column in cursor.description)
        row = cursor.fetchone()
        return cursor.rowcount, dict(zip(prepared.labels, row)) if row is not None else None
    except engine.dialect.loaded_dbapi.Error as error:
        disconnected = engine.dialect.is_disconnect(error, driver, None)
        if disconnected:
            # As SQLAlchemy's own execution does: a lost connection means the others opened
            # before it are likely gone too (a restart, a failover), so the pool drops them all.
            engine.pool._invalidate(pooled, error)
        raise DBAPIError.instance(prepared.sql, values, error, engine.dialect.loaded_dbapi.Error,
                                  connection_invalidated=disconnected, dialect=engine.dialect) from error
    finally:
        _give_back(pooled, driver)


def _give_back(pooled, driver) -> None:
    """Back to the pool in transaction mode, as the request's sessions expect every connection to
    be; one that cannot be put back so (lost, or in an unknown state) is dropped instead."""
    if pooled.is_valid:
        try:
            if driver.info.transaction_status != TransactionStatus.IDLE:
                raise RuntimeError("lone statement left the connection inside a transaction")
            driver.autocommit = False
        except Exception as error:
            pooled.invalidate(error)
    pooled.close()
