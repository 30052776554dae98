"""Lone statements (idp.storage.rows.alone): on PostgreSQL they go to the driver without SQLAlchemy's
execution, and must read, write and fail exactly as SQLAlchemy's own execution of them does, and
hand every connection back to the pool as the request's transactions expect it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import exc, select, text

from idp.extensions import db
from idp.services import accounts, grants
from idp.storage.models import RefreshToken, utcnow
from idp.storage.rows import alone
from tests.support import OIDCBrowser


def _through_sqlalchemy(statement, params):
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        result = conn.execute(statement, params)
        row = result.first() if result.returns_rows else None
        return result.rowcount, dict(row._mapping) if row is not None else None


@pytest.fixture
def refresh_token(app, rp, user):
    browser = OIDCBrowser(app.test_client())
    code = browser.login_and_get_code(rp, user.email, scope="openid offline_access")["code"]
    return browser.exchange(rp, code).json["refresh_token"]


def test_reads_give_what_sqlalchemy_gives(svc, user, refresh_token):
    lookup = {"presented_hash": grants.sha256_hex(refresh_token)}
    found = alone(grants._FIND_REFRESH_TOKEN, lookup)[1]
    assert found == _through_sqlalchemy(grants._FIND_REFRESH_TOKEN, lookup)[1]
    assert found["token.used_at"] is None and found["session.id"] is not None
    # Times come back aware, in UTC or any zone, never naive, on both backends.
    assert all(found[label].utcoffset() is not None
               for label in ("token.created_at", "token.expires_at", "family.expires_at", "session.last_active_at"))
    profile = alone(accounts._PROFILE, {"user_id": user.id})[1]
    assert profile == _through_sqlalchemy(accounts._PROFILE, {"user_id": user.id})[1]
    assert profile["email"] == user.email and profile["email_verified"] is user.email_verified  # a bool
    assert alone(accounts._PROFILE, {"user_id": "nobody"})[1] is None


def test_a_code_is_consumed_once_and_returns_its_row_as_sqlalchemy_reads_it(app, svc, rp, user):
    code = OIDCBrowser(app.test_client()).login_and_get_code(rp, user.email)["code"]
    consume = {"presented_hash": grants.sha256_hex(code), "presenting_client": rp["client_id"],
               "consumed_at": utcnow(), "issued_family": "family-of-this-code"}
    row = alone(grants._CONSUME_CODE, consume)[1]
    this_code = grants._CODES.c.code_hash == consume["presented_hash"]
    assert row == _through_sqlalchemy(select(*grants._CODES.c).where(this_code), {})[1]
    assert row["family_id"] == "family-of-this-code" and row["amr"] == ["pwd"]  # JSON as a list
    assert all(row[label].utcoffset() is not None for label in ("auth_time", "expires_at", "used_at"))
    # Committed by itself, and once: a second attempt (a replay, a race) consumes nothing.
    db.session.rollback()
    assert alone(grants._CONSUME_CODE, {**consume, "issued_family": "another"})[1] is None
    assert _through_sqlalchemy(select(grants._CODES.c.family_id).where(this_code), {})[1]["family_id"] == \
        "family-of-this-code"


def _rotation(presented: str, successor: str, client_id: str) -> dict:
    now = utcnow()
    return {"presented_hash": grants.sha256_hex(presented), "presenting_client": client_id, "now": now,
            "idle_cutoff": now - timedelta(hours=1), "successor_hash": grants.sha256_hex(successor),
            "successor_idle_expiry": now + timedelta(days=1)}


def test_a_rotation_consumes_once_stores_the_successor_and_reads_the_grant(backend, svc, refresh_token, rp):
    if backend != "postgres":
        pytest.skip("rotation is one statement on PostgreSQL only; SQLite runs three in a transaction")
    lookup = {"presented_hash": grants.sha256_hex(refresh_token)}
    before = alone(grants._FIND_REFRESH_TOKEN, lookup)[1]
    rotation = _rotation(refresh_token, "successor", rp["client_id"])
    rowcount, row = alone(grants._ROTATE_REFRESH_TOKEN, rotation)
    # The grant and session as the lookup reads them, the token now used.
    assert rowcount == 1 and row == {**before, "token.used_at": rotation["now"]}
    assert alone(grants._ROTATE_REFRESH_TOKEN, _rotation(refresh_token, "another", rp["client_id"])) == (0, None)
    db.session.rollback()  # committed by itself: nothing of the request's transaction holds it
    stored = {row.token_hash: row for row in db.session.scalars(select(RefreshToken))}
    assert grants.sha256_hex("another") not in stored
    successor = stored[grants.sha256_hex("successor")]
    assert successor.used_at is None and successor.family_id == before["family.id"]
    assert successor.expires_at == rotation["successor_idle_expiry"]  # the grant lives longer


def test_a_rotation_consumes_nothing_it_may_not_use(backend, svc, refresh_token, rp):
    if backend != "postgres":
        pytest.skip("rotation is one statement on PostgreSQL only")
    lookup = {"presented_hash": grants.sha256_hex(refresh_token)}
    token_expiry = alone(grants._FIND_REFRESH_TOKEN, lookup)[1]["token.expires_at"]
    refused = {
        "another client": {"presenting_client": "another-client"},
        "the session idle too long": {"idle_cutoff": utcnow() + timedelta(seconds=1)},
        "past the token's expiry": {"now": token_expiry + timedelta(seconds=1)},
    }
    for case, change in refused.items():
        assert alone(grants._ROTATE_REFRESH_TOKEN, {**_rotation(refresh_token, case, rp["client_id"]),
                                                     **change}) == (0, None), case
    assert alone(grants._FIND_REFRESH_TOKEN, lookup)[1]["token.used_at"] is None
    assert db.session.scalar(select(RefreshToken).where(RefreshToken.token_hash.in_(
        [grants.sha256_hex(case) for case in refused]))) is None


def test_errors_are_sqlalchemys_and_leave_nothing_behind(backend, svc, refresh_token, rp):
    if backend != "postgres":
        pytest.skip("the driver path is PostgreSQL's")
    # The successor's hash is taken: a unique violation, raised as SQLAlchemy raises it, and the
    # presented token stays unused, since the statement is atomic.
    taken = _rotation(refresh_token, refresh_token, rp["client_id"])
    with pytest.raises(exc.IntegrityError):
        alone(grants._ROTATE_REFRESH_TOKEN, taken)
    lookup = {"presented_hash": grants.sha256_hex(refresh_token)}
    assert alone(grants._FIND_REFRESH_TOKEN, lookup)[1]["token.used_at"] is None
    with pytest.raises(exc.ProgrammingError):
        alone(text("SELECT * FROM no_such_table"))
    # A naive time is refused before it is sent, as the UTC column type refuses it everywhere.
    with pytest.raises(exc.StatementError):
        alone(grants._ROTATE_REFRESH_TOKEN, {**_rotation(refresh_token, "x", rp["client_id"]),
                                             "now": datetime(2026, 1, 1)})


def test_connections_go_back_in_transaction_mode(backend, svc, refresh_token, rp):
    if backend != "postgres":
        pytest.skip("the driver path is PostgreSQL's")
    lookup = {"presented_hash": grants.sha256_hex(refresh_token)}
    for _ in range(3):
        alone(grants._FIND_REFRESH_TOKEN, lookup)
        with pytest.raises(exc.IntegrityError):
            alone(grants._ROTATE_REFRESH_TOKEN, _rotation(refresh_token, refresh_token, rp["client_id"]))
    db.session.remove()
    pool = db.engine.pool
    held = [db.engine.raw_connection() for _ in range(pool.size())]  # every pooled connection at once
    try:
        assert not any(connection.driver_connection.autocommit for connection in held)
    finally:
        for connection in held:
            connection.close()
    # And a request's transaction on them still rolls back.
    db.session.execute(text("UPDATE refresh_tokens SET used_at = now()"))
    db.session.rollback()
    assert alone(grants._FIND_REFRESH_TOKEN, lookup)[1]["token.used_at"] is None
