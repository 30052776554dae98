"""Pooled PostgreSQL connections that the server closed: an idle one is replaced before use; one in
steady use fails its request with a 503, and the next request works again."""

from __future__ import annotations

import base64

import psycopg
import pytest
from sqlalchemy import text

import idp
from idp.extensions import db
from idp import create_app
from tests.conftest import PG_ADMIN_URL, _settings


@pytest.fixture
def pg_app(make_app, backend):
    if backend != "postgres":
        pytest.skip("SQLite has no server to close a connection")
    return make_app()


def _pooled_backend_pid(app) -> int:
    """Open one pooled connection, note its server process, and hand it back to the pool."""
    with app.app_context():
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        db.session.remove()
    return pid


def _terminate_the_pool(app) -> list[int]:
    """Close every connection the app's pool holds (a request may use more than one: its transaction,
    and lone statements outside it), as a database restart would."""
    pids = []
    with app.app_context():
        database = db.session.execute(text("SELECT current_database()")).scalar_one()
        db.session.remove()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        for (pid,) in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall():
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            pids.append(pid)
    assert pids
    return pids


def _refresh_with_unknown_token(app, rp):
    """A token request whose answer needs a database read (the refresh-token lookup)."""
    auth = base64.b64encode(f"{rp['client_id']}:{rp['client_secret']}".encode()).decode()
    return app.test_client().post("/token", data={"grant_type": "refresh_token", "refresh_token": "unknown"},
                                  headers={"Authorization": f"Basic {auth}"})


@pytest.fixture
def confidential_rp(pg_app):
    with pg_app.app_context():
        client, secret = pg_app.extensions["idp"].clients.create(
            name="Panel app", redirect_uris=["https://rp.example/cb"], first_party=True)
    return {"client_id": client.client_id, "client_secret": secret}


def test_an_idle_connection_closed_by_the_server_is_replaced_before_use(pg_app, confidential_rp, monkeypatch):
    assert _refresh_with_unknown_token(pg_app, confidential_rp).status_code == 400  # client now cached
    old_pids = _terminate_the_pool(pg_app)
    monkeypatch.setattr(idp, "IDLE_PING_SECONDS", 0.0)  # the connections count as idle at once

    response = _refresh_with_unknown_token(pg_app, confidential_rp)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"] == "invalid_grant"
    assert _pooled_backend_pid(pg_app) not in old_pids


def test_a_busy_connection_closed_by_the_server_fails_one_request_with_503(pg_app, confidential_rp):
    assert _refresh_with_unknown_token(pg_app, confidential_rp).status_code == 400
    _terminate_the_pool(pg_app)  # just used: not pinged before the next request

    failed = _refresh_with_unknown_token(pg_app, confidential_rp)
    assert failed.status_code == 503
    assert failed.json["error"] == "temporarily_unavailable"
    assert failed.headers["Retry-After"] == "1"

    again = _refresh_with_unknown_token(pg_app, confidential_rp)
    assert again.status_code == 400, again.get_data(as_text=True)
    assert again.json["error"] == "invalid_grant"


def test_a_database_that_cannot_be_reached_is_a_503_not_a_traceback(tmp_path):
    app = create_app(_settings(tmp_path, database_url="postgresql+psycopg://postgres@127.0.0.1:1/idp"))
    response = _refresh_with_unknown_token(app, {"client_id": "panel", "client_secret": "secret"})
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.json["error"] == "temporarily_unavailable"
