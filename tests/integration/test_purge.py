"""`idp purge`: what goes (expired codes and tokens, dead grants, long-ended sessions, finished
logouts) and what stays (anything still usable, anything a replay check or the admin pages still
need), on SQLite and PostgreSQL, in batches; the worker's periodic purge; and ending every session
of a user at once still queues one logout per session and app."""

from __future__ import annotations

import json
import logging
import secrets
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from idp.cli import main
from idp.crypto.secrets import sha256_hex
from idp.extensions import db
from idp.services.purge import PeriodicPurge, Purger
from idp.storage.models import (
    AuditEvent,
    AuthorizationCode,
    BrowserSession,
    LogoutDelivery,
    RefreshToken,
    SessionClient,
    TokenFamily,
    utcnow,
)
from idp.storage.store import MemoryStore

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
PURGED_TABLES = ["authorization_codes", "refresh_tokens", "token_families", "sessions",
                 "logout_deliveries"]


# -- rows in the states the real code leaves them in ---------------------------------------------------


def _session(user_id, *, created, ended=None, last_active=None, **extra) -> str:
    row = BrowserSession(token_hash=sha256_hex(secrets.token_hex(16)), user_id=user_id, created_at=created,
                         last_active_at=last_active or created, expires_at=created + 90 * DAY, auth_time=created,
                         amr=["pwd"], acr="urn:idp:acr:1fa", ended_at=ended,
                         end_reason="ended_by_user" if ended else None, **extra)
    db.session.add(row)
    db.session.flush()
    return row.id


def _family(client_id, user_id, session_id, *, created, expires=None, revoked=None) -> str:
    row = TokenFamily(client_id=client_id, user_id=user_id, session_id=session_id, scope="openid",
                      created_at=created, expires_at=expires or created + 90 * DAY, revoked_at=revoked,
                      revoke_reason="session_ended" if revoked else None)
    db.session.add(row)
    db.session.flush()
    return row.id


def _code(client_id, user_id, session_id, *, created, used=True, tag=None) -> str:
    code_hash = sha256_hex(tag or secrets.token_hex(16))
    db.session.add(AuthorizationCode(
        code_hash=code_hash, client_id=client_id, user_id=user_id, session_id=session_id,
        redirect_uri="https://rp.example/cb", scope="openid", auth_time=created, acr="urn:idp:acr:1fa", amr=["pwd"],
        created_at=created, expires_at=created + timedelta(seconds=60), used_at=created if used else None))
    return code_hash


def _refresh(family_id, *, created, lifetime=14 * DAY, used=None) -> str:
    token_hash = sha256_hex(secrets.token_hex(16))
    db.session.add(RefreshToken(token_hash=token_hash, family_id=family_id, created_at=created,
                                expires_at=created + lifetime, used_at=used))
    return token_hash


def _delivery(client_id, session_id, *, status, last_worked) -> str:
    row = LogoutDelivery(session_id=session_id, client_id=client_id, target_url="https://rp.example/bc",
                         logout_token="x.y.z", status=status, attempts=1, next_attempt_at=last_worked,
                         created_at=last_worked - timedelta(seconds=30),
                         delivered_at=last_worked if status == "delivered" else None)
    db.session.add(row)
    db.session.flush()
    return row.id


def _ids(model) -> set:
    [key] = model.__table__.primary_key.columns
    return set(db.session.scalars(select(key)))


@pytest.fixture
def world(svc, user, rp):
    """One row of every kind on each side of each cut-off; returns what must go and what must stay."""
    now = utcnow()
    client = rp["client_id"]
    gone, kept = {t: set() for t in PURGED_TABLES}, {t: set() for t in PURGED_TABLES}

    open_session = _session(user.id, created=now - DAY, last_active=now - HOUR)
    kept["sessions"].add(open_session)
    # Past its idle limit but not swept yet: the sweep ends it (with its logouts), not the purge.
    kept["sessions"].add(_session(user.id, created=now - 40 * DAY, last_active=now - 20 * DAY))
    kept["sessions"].add(_session(user.id, created=now - 10 * DAY, ended=now - 5 * DAY))
    long_ended = _session(user.id, created=now - 100 * DAY, ended=now - 60 * DAY)
    gone["sessions"].add(long_ended)
    # Ended long ago, but a grant still counts on it: deleting it would free the grant from its session.
    held = _session(user.id, created=now - 100 * DAY, ended=now - 60 * DAY)
    kept["sessions"].add(held)
    kept["token_families"].add(_family(client, user.id, held, created=now - 70 * DAY))

    live = _family(client, user.id, open_session, created=now - DAY)
    kept["token_families"].add(live)
    expired = _family(client, user.id, long_ended, created=now - 100 * DAY, expires=now - 10 * DAY,
                      revoked=now - 60 * DAY)
    gone["token_families"].add(expired)
    kept["token_families"].add(_family(client, user.id, open_session, created=now - DAY, revoked=now - timedelta(minutes=10)))
    revoked_long_ago = _family(client, user.id, open_session, created=now - 3 * DAY, revoked=now - 2 * DAY)
    gone["token_families"].add(revoked_long_ago)

    gone["authorization_codes"].add(_code(client, user.id, open_session, created=now - DAY))
    gone["authorization_codes"].add(_code(client, user.id, open_session, created=now - DAY, used=False))
    kept["authorization_codes"].add(_code(client, user.id, open_session, created=now - timedelta(seconds=10),
                                          used=False))
    # Used and expired, but inside the grace hour: a replay must still find it and revoke its grant.
    kept["authorization_codes"].add(_code(client, user.id, open_session, created=now - timedelta(minutes=20)))

    kept["refresh_tokens"].add(_refresh(live, created=now - DAY))
    # Rotated (used) but not expired: its replay must still revoke the grant (RFC 9700 §4.14.2).
    kept["refresh_tokens"].add(_refresh(live, created=now - 2 * DAY, used=now - DAY))
    gone["refresh_tokens"].add(_refresh(live, created=now - 20 * DAY, used=now - 19 * DAY))
    gone["refresh_tokens"].add(_refresh(revoked_long_ago, created=now - 3 * DAY))

    gone["logout_deliveries"].add(_delivery(client, long_ended, status="delivered", last_worked=now - 60 * DAY))
    gone["logout_deliveries"].add(_delivery(client, "gone-session-1", status="failed", last_worked=now - 30 * DAY))
    kept["logout_deliveries"].add(_delivery(client, "recent-session", status="delivered", last_worked=now - DAY))
    # Still being retried, however old: the purge never takes a logout an app has not had.
    kept["logout_deliveries"].add(_delivery(client, "retried-session", status="pending",
                                            last_worked=now - 30 * DAY))
    db.session.add(SessionClient(session_id=long_ended, client_id=client))
    db.session.commit()
    return {"gone": gone, "kept": kept, "user_id": user.id, "client_id": client}


MODELS = {"authorization_codes": AuthorizationCode, "refresh_tokens": RefreshToken,
          "token_families": TokenFamily, "sessions": BrowserSession, "logout_deliveries": LogoutDelivery}


def _assert_purged(world):
    db.session.rollback()
    for table, model in MODELS.items():
        left = _ids(model)
        assert not (world["gone"][table] & left), f"{table}: should have gone"
        assert world["kept"][table] <= left, f"{table}: should have stayed"
    assert db.session.scalar(select(func.count()).select_from(SessionClient)) == 0, "links go with their session"


def test_purge_removes_exactly_what_can_never_be_used_again(svc, world):
    result = Purger(svc.settings).run()
    _assert_purged(world)
    direct = {t: len(world["gone"][t]) for t in PURGED_TABLES}
    # Tokens of a deleted grant go by cascade, so the counted rows may be fewer than all that went.
    assert result.deleted["sessions"] == direct["sessions"]
    assert result.deleted["token_families"] == direct["token_families"]
    assert result.deleted["logout_deliveries"] == direct["logout_deliveries"]
    assert result.complete and not result.dry_run

    again = Purger(svc.settings).run()
    assert sum(again.deleted.values()) == 0, "a second run finds nothing"


def test_dry_run_counts_and_deletes_nothing(svc, world):
    before = {table: _ids(model) for table, model in MODELS.items()}
    result = Purger(svc.settings).run(dry_run=True).as_dict()
    assert result["dry_run"] is True and "deleted" not in result
    assert result["would_delete"]["sessions"] == 1 and result["would_delete"]["logout_deliveries"] == 2
    assert {table: _ids(model) for table, model in MODELS.items()} == before


def _cli(svc, tmp_path, *args):
    settings = svc.settings
    env = {
        "IDP_DATABASE_URL": settings.database_url,
        "IDP_REDIS_URL": settings.redis_url or "",
        "IDP_REDIS_PREFIX": settings.redis_prefix,
        "IDP_INSTANCE_DIR": str(settings.instance_dir),
        "IDP_SECRET_KEY": settings.secret_key,
        "IDP_CONFIG_FILE": str(tmp_path / "no-config.toml"),
    }
    db.session.commit()  # the command opens a connection of its own; leave nothing locked
    return CliRunner().invoke(main, ["purge", *args], env=env, catch_exceptions=False)


def test_cli_purges_in_batches_and_prints_one_json_object(svc, user, rp, tmp_path):
    now = utcnow()
    session_id = _session(user.id, created=now - DAY)
    for _ in range(5):
        _code(rp["client_id"], user.id, session_id, created=now - DAY)
    db.session.commit()

    result = _cli(svc, tmp_path, "--batch-size", "2")
    assert result.exit_code == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.strip()]
    output = json.loads(line)
    assert output["deleted"]["authorization_codes"] == 5
    assert output["batches"]["authorization_codes"] == 3, "2 + 2 + 1, each its own transaction"
    assert output["total"] == 5 and output["complete"] is True
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(AuthorizationCode)) == 0


def test_cli_dry_run(svc, world, tmp_path):
    result = _cli(svc, tmp_path, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["would_delete"]["sessions"] == 1
    db.session.rollback()
    assert world["gone"]["sessions"] <= _ids(BrowserSession)


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1000001", ""])
def test_cli_refuses_bad_batch_sizes(svc, tmp_path, value):
    result = _cli(svc, tmp_path, "--batch-size", value)
    assert result.exit_code == 2 and result.stdout == ""
    assert "--batch-size" in result.stderr and "Traceback" not in result.stderr


def test_service_refuses_a_batch_size_out_of_range(svc):
    with pytest.raises(ValueError):
        Purger(svc.settings).run(batch_size=0)


def test_a_time_budget_leaves_the_rest_for_the_next_run(svc, user, rp):
    now = utcnow()
    session_id = _session(user.id, created=now - DAY)
    for _ in range(3):
        _code(rp["client_id"], user.id, session_id, created=now - DAY)
    db.session.commit()
    stopped = Purger(svc.settings).run(batch_size=1, time_budget=0)
    assert stopped.complete is False and sum(stopped.deleted.values()) == 0
    finished = Purger(svc.settings).run(batch_size=1)
    assert finished.deleted["authorization_codes"] == 3 and finished.complete


# -- the worker's periodic purge --------------------------------------------------------------------


def test_periodic_purge_runs_once_per_interval_across_processes(svc, user, rp):
    now = utcnow()
    session_id = _session(user.id, created=now - DAY)
    _code(rp["client_id"], user.id, session_id, created=now - DAY)
    db.session.commit()
    store = MemoryStore()
    log = logging.getLogger("test.purge")
    first, second = PeriodicPurge(svc.settings, store, log), PeriodicPurge(svc.settings, store, log)

    first()
    assert db.session.scalar(select(func.count()).select_from(AuthorizationCode)) == 0
    second_code = _code(rp["client_id"], user.id, session_id, created=now - DAY)
    db.session.commit()
    second()  # another process in the same interval: the lease is taken
    first()   # the same process before its next interval
    assert _ids(AuthorizationCode) == {second_code}

    off = PeriodicPurge(svc.settings.replace(purge_interval=0), MemoryStore(), log)
    off()
    assert _ids(AuthorizationCode) == {second_code}


def test_periodic_purge_failure_is_logged_not_raised(svc, caplog):
    class BrokenStore(MemoryStore):
        def add(self, *args):
            raise RuntimeError("store down")

    task = PeriodicPurge(svc.settings, BrokenStore(), logging.getLogger("test.purge"))
    with caplog.at_level(logging.ERROR, logger="test.purge"):
        task()  # the outbox deliveries after it in the same pass must still run
    assert "periodic purge failed" in caplog.text


# -- ending every session at once -------------------------------------------------------------------


def test_ending_all_sessions_at_once_queues_one_logout_per_session_and_app(app, svc, user):
    app.config["IDP_DELIVER_LOGOUTS_IMMEDIATELY"] = False
    with_uri = [svc.clients.create(name=f"App {n}", redirect_uris=["https://rp.example/cb"], first_party=True,
                                   backchannel_logout_uri=f"https://rp{n}.example/bc")[0].client_id for n in (1, 2)]
    without_uri = svc.clients.create(name="No URI", redirect_uris=["https://rp.example/cb"],
                                     first_party=True)[0].client_id
    now = utcnow()
    sessions = [_session(user.id, created=now - HOUR) for _ in range(3)]
    kept = _session(user.id, created=now - HOUR)
    families = []
    for session_id in [*sessions, kept]:
        for client_id in [*with_uri, without_uri]:
            db.session.add(SessionClient(session_id=session_id, client_id=client_id))
        families.append(_family(with_uri[0], user.id, session_id, created=now - HOUR))
    db.session.commit()

    assert svc.sessions.end_all_for_user(user.id, "ended_by_admin", except_session_id=kept,
                                         actor_type="admin", actor_id="admin-1") == 3
    db.session.rollback()
    queued = {(r.session_id, r.client_id) for r in db.session.scalars(select(LogoutDelivery))}
    assert queued == {(s, c) for s in sessions for c in with_uri}
    tokens = {r.session_id: r.logout_token for r in db.session.scalars(select(LogoutDelivery))}
    assert all(token.count(".") == 2 for token in tokens.values())
    ended = {s.id: s for s in db.session.scalars(select(BrowserSession))}
    assert all(ended[s].ended_at is not None and ended[s].end_reason == "ended_by_admin" for s in sessions)
    assert ended[kept].ended_at is None
    revoked = {f.session_id: f.revoked_at for f in db.session.scalars(select(TokenFamily))}
    assert all(revoked[s] is not None for s in sessions) and revoked[kept] is None
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.event == "session_ended")).all()
    assert sorted(e.session_id for e in events) == sorted(sessions)
    assert {(e.actor_type, e.actor_id, e.details["reason"]) for e in events} == {("admin", "admin-1",
                                                                                  "ended_by_admin")}

    assert svc.sessions.end_all_for_user(user.id, "ended_by_admin", except_session_id=kept) == 0
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(LogoutDelivery)) == 6, "nothing queued twice"


def test_migrations_and_models_declare_the_same_indexes(svc):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert differences == []
