"""Fixtures: the embedded backend (SQLite + in-process store) and the production backend
(PostgreSQL + Redis on 127.0.0.1). Each run creates its own PostgreSQL database and Redis key
prefix and drops them at the end. Under CI=true a missing PostgreSQL or Redis fails the run."""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid

import psycopg
import pytest
import redis as redis_lib
from sqlalchemy import text

from idp import create_app
from idp.cli import initialise
from idp.extensions import db
from idp.settings import load_settings
from tests.support import IsolatedClient, OIDCBrowser

PG_ADMIN_URL = os.environ.get("IDP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RUN_ID = uuid.uuid4().hex[:10]

# Fast-but-real argon2 parameters for the suite; production defaults are tested in tests/unit/crypto.
TEST_ARGON2 = {"argon2_memory_kib": 1024, "argon2_time_cost": 1, "argon2_parallelism": 1}


def _unavailable(what: str, error: Exception):
    message = f"{what} is not reachable on 127.0.0.1 ({error}); integration tests need it"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def fresh_pg_database(name: str):
    """An empty PostgreSQL database for the block (SQLAlchemy URL), dropped afterwards."""
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        _unavailable("PostgreSQL", exc)
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url():
    """A database of this run's own, migrated once; dropped at the end."""
    with fresh_pg_database(f"idp_test_{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    client = redis_lib.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis_lib.RedisError as exc:
        _unavailable("Redis", exc)
    yield REDIS_URL
    for key in client.scan_iter(f"idp-test-{RUN_ID}*"):
        client.delete(key)


def _redis_topology(kind: str, tmp_path_factory):
    from tests import redis_topologies

    started = {"sentinel": redis_topologies.SentinelTopology, "cluster": redis_topologies.ClusterTopology}[kind]
    for attempt in range(3):  # a free port can be taken by someone else before the server binds it
        try:
            topology = started(tmp_path_factory.mktemp(f"redis-{kind}"))
            break
        except redis_topologies.TopologyUnavailable as exc:
            if attempt == 2 or "not installed" in str(exc):
                _unavailable(f"Redis {kind}", exc)
    yield topology
    topology.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory):
    """A master, a replica and a Sentinel on free loopback ports, for this session only."""
    yield from _redis_topology("sentinel", tmp_path_factory)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A three-node Redis Cluster on free loopback ports, for this session only."""
    yield from _redis_topology("cluster", tmp_path_factory)


@pytest.fixture(scope="session")
def _pg_migrated(pg_url, tmp_path_factory):
    app = create_app(_settings(tmp_path_factory.mktemp("pg-init"), database_url=pg_url))
    initialise(app)
    return pg_url


def _settings(instance_dir, **overrides):
    values = {
        "instance_dir": instance_dir,
        "secret_key": "test-secret-" + RUN_ID,
        "issuer": "http://localhost:5000",
        "mail_url": f"file://{instance_dir}/mail",
        **TEST_ARGON2,
        **overrides,
    }
    return load_settings(environ={}, **values)


@pytest.fixture(params=["embedded", "postgres"])
def backend(request):
    return request.param


@pytest.fixture
def make_app(request, tmp_path, backend):
    """Build an app on the chosen backend; keyword arguments override settings.

    On PostgreSQL each app gets a Redis key prefix of its own; pass another app's
    `settings.redis_prefix` as `redis_prefix` to build a second instance sharing its store,
    or a `redis_url` of your own (for example a closed port, to play Redis being down)."""
    created = []

    def build(**overrides):
        if backend == "postgres":
            backing = {
                "database_url": request.getfixturevalue("_pg_migrated"),
                "redis_url": request.getfixturevalue("redis_url"),
                "redis_prefix": f"idp-test-{RUN_ID}-{secrets.token_hex(4)}:",
            }
            settings = _settings(tmp_path, **{**backing, **overrides})
        else:
            settings = _settings(tmp_path, **overrides)
        app = create_app(settings)
        app.config["TESTING"] = True
        # Fixtures hold an app context open; each test-client request still gets its own, as in production.
        app.test_client_class = IsolatedClient
        if backend == "embedded":
            initialise(app)
        else:
            with app.app_context():
                app.extensions["idp"].keys.ensure_keys()
        created.append((app, backend))
        return app

    yield build
    for app, kind in created:
        with app.app_context():
            db.session.remove()
            if kind == "postgres":
                _truncate_all()
            db.engine.dispose()


def _truncate_all():
    tables = ", ".join(t.name for t in db.metadata.sorted_tables)
    db.session.execute(text(f"TRUNCATE {tables} CASCADE"))
    db.session.commit()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


@pytest.fixture
def svc(ctx):
    return ctx.extensions["idp"]


@pytest.fixture
def user(svc):
    return svc.accounts.create_user("alice@example.com", "correct horse battery staple", "Alice",
                                    phone="+14155550100")


@pytest.fixture
def rp(svc):
    """A confidential, first-party relying app with both secret methods and refresh tokens."""
    client, secret = svc.clients.create(
        name="Alarm panel app",
        redirect_uris=["https://rp.example/cb"],
        post_logout_redirect_uris=["https://rp.example/post_logout"],
        first_party=True,
    )
    return {"client_id": client.client_id, "client_secret": secret, "redirect_uri": "https://rp.example/cb"}


@pytest.fixture
def public_rp(svc):
    client, _ = svc.clients.create(name="Camera app", redirect_uris=["com.example.camera:/cb"], public=True,
                                   first_party=True)
    return {"client_id": client.client_id, "client_secret": None, "redirect_uri": "com.example.camera:/cb"}


@pytest.fixture
def browser(app):
    return OIDCBrowser(app.test_client())


@pytest.fixture
def smtp_server():
    from tests.receivers import SmtpServer

    with SmtpServer() as server:
        yield server


@pytest.fixture
def http_receiver():
    from tests.receivers import HttpReceiver

    with HttpReceiver() as receiver:
        yield receiver
