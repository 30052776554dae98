"""Scale benchmark: idp on a PostgreSQL database filled like a busy deployment's.

    .venv/bin/python bench/scale.py [--users 100000 --sessions 1000000 --tokens 5000000]
    .venv/bin/python bench/scale.py --quick          # 2k users, 20k sessions, 100k tokens

Creates a throwaway database `idp_scale_<stamp>_<hex>` and Redis prefix, runs `idp init`, registers
clients through the CLI, then fills the tables server-side (INSERT … SELECT over generate_series,
foreign-key triggers off and secondary indexes built afterwards, as a restore would) with users,
browser sessions (five "heavy" users with 1,000 open sessions each) and a mix of token families,
refresh tokens, authorization codes and back-channel logout outbox rows in the states the real code
leaves them in (access tokens are not in the database: their state lives in the shared store). Then, against the real code:

- the session list (`/api/me/sessions` over HTTP with real access tokens, and the same service
  calls in-process) for typical users and for a heavy user, p50/p99;
- ending all 1,000 sessions of a heavy user through the admin API and through the service call,
  with the outbox rows they queue;
- `idp purge` on the filled database while sign-ins run against `idp serve` and a probe loop
  writes what a sign-in writes; the slowest of those during the purge, and any lock waits seen;
- EXPLAIN (ANALYZE, BUFFERS) of the statements the code sends for each hot path (captured from
  SQLAlchemy while the real call runs), and for each index migration 0005 adds, the plan of the
  query it serves with and without it.

Prints a table and writes bench/results/scale-<stamp>.json. The database and Redis keys are dropped
at the end, also on failure, Ctrl-C or the --time-limit. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import requests  # noqa: E402

from bench.run import (  # noqa: E402  (the load benchmark's deployment, servers and sign-in flow)
    EMAIL,
    HTTP_TIMEOUT,
    IDP,
    PASSWORD,
    PG_ADMIN_URL,
    REDIRECT_URI,
    SCOPE,
    BenchError,
    Deployment,
    LogoutReceiver,
    Server,
    log,
    percentile,
    sign_in,
    tear_down,
    write_results,
)

HEAVY_USERS = 5
HEAVY_SESSIONS = 1000
SESSION_SCOPE = SCOPE + " sessions"
USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Safari/605.1.15",
    "AlarmPanel/3.2 (iOS 17.4; iPad)",
]


class ScaleDeployment(Deployment):
    """bench/run.py's deployment (env, `idp` CLI, drop on exit) under a database name of its own."""

    def __init__(self, run_id: str, workdir: Path):
        super().__init__(run_id, workdir)
        self.db_name = f"idp_scale_{run_id}"
        self.redis_prefix = f"idp-scale-{run_id}:"
        base = self.env["IDP_DATABASE_URL"].rsplit("/", 1)[0]
        self.env["IDP_DATABASE_URL"] = f"{base}/{self.db_name}"
        self.env["IDP_REDIS_PREFIX"] = self.redis_prefix
        # The periodic purge would start in the server's workers and empty what is measured here.
        self.env["IDP_PURGE_INTERVAL"] = "0"
        self.dsn = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def summary(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"n": 0}
    return {"n": len(values_ms), "p50_ms": round(percentile(values_ms, 50), 2),
            "p99_ms": round(percentile(values_ms, 99), 2), "max_ms": round(max(values_ms), 2),
            "mean_ms": round(statistics.fmean(values_ms), 2)}


# ------------------------------------------------------------------------------------------------ fill

# Deterministic pseudo-random numbers in SQL: row n of a table always gets the same values, so the
# statements below can find each other's rows (session n's id is md5('s'||n)) without lookups.
FILL_FUNCTIONS = """
CREATE FUNCTION scale_h(t text) RETURNS bigint IMMUTABLE LANGUAGE sql
  AS $$ SELECT ('x' || substr(md5(t), 1, 15))::bit(60)::bigint $$;
CREATE FUNCTION scale_uuid(t text) RETURNS text IMMUTABLE LANGUAGE sql AS $$ SELECT md5(t)::uuid::text $$;
CREATE FUNCTION scale_sha(t text) RETURNS text IMMUTABLE LANGUAGE sql
  AS $$ SELECT encode(sha256(convert_to(t, 'UTF8')), 'hex') $$;
CREATE FUNCTION scale_b64(t text, n int) RETURNS text IMMUTABLE LANGUAGE sql
  AS $$ SELECT substr(translate(encode(sha256(convert_to(t, 'UTF8')), 'base64'), '+/=', '-_'), 1, n) $$;
"""
DROP_FILL_FUNCTIONS = ("DROP FUNCTION scale_h(text); DROP FUNCTION scale_uuid(text); DROP FUNCTION scale_sha(text); "
                       "DROP FUNCTION scale_b64(text, int);")


def fill_statements(p: dict) -> list[list[tuple[str, str]]]:
    """Stages of (name, SQL); the statements of one stage only read tables earlier stages filled."""
    day = "interval '1 day'"
    users = f"""
      INSERT INTO users (id, email, email_verified, name, phone, phone_verified, password_hash, is_admin,
                         email_otp_enabled, sms_otp_enabled, created_at, updated_at)
      SELECT scale_uuid('u' || i),
             CASE WHEN i <= {HEAVY_USERS} THEN 'heavy' || i || '@scale.example' ELSE 'user' || i || '@scale.example' END,
             true, 'Scale user ' || i, NULL, false, %(password_hash)s, false, false, false,
             %(now)s - (i % 700) * {day}, %(now)s - (i % 700) * {day}
      FROM generate_series(1, %(users)s) i"""
    # Sessions: 30 % open (active within days), 0.1 % past their idle limit but not swept yet, the rest
    # ended at some point in the last 150 days for the usual reasons.
    sessions = f"""
      INSERT INTO sessions (id, token_hash, user_id, created_at, last_active_at, expires_at, auth_time, amr, acr,
                            ip, user_agent, app_version, ended_at, end_reason)
      SELECT scale_uuid('s' || i), scale_sha('st' || i), scale_uuid('u' || ({HEAVY_USERS} + 1 + u)),
             created, CASE WHEN kind = 'open' THEN greatest(created, %(now)s - (h2 % 432000) * interval '1 second')
                           WHEN kind = 'stale' THEN %(now)s - 20 * {day}
                           ELSE ended - interval '5 minutes' END,
             created + 90 * {day}, created,
             CASE WHEN i % 4 = 0 THEN '["pwd", "otp"]' ELSE '["pwd"]' END::json,
             CASE WHEN i % 4 = 0 THEN 'urn:idp:acr:mfa' ELSE 'urn:idp:acr:1fa' END,
             '10.' || ((i >> 16) & 255) || '.' || ((i >> 8) & 255) || '.' || (i & 255),
             (%(user_agents)s::text[])[1 + i % 5], CASE WHEN i % 7 = 0 THEN '3.' || (i % 10) || '.0' END,
             CASE WHEN kind = 'ended' THEN ended END,
             CASE WHEN kind = 'ended' THEN (ARRAY['expired', 'ended_by_user', 'password_changed', 'ended_by_admin',
                                                 'signed_in_as_other_user'])[1 + h2 % 5] END
      FROM (
        SELECT i, u, h2, kind, created,
               created + ((h2 % 1000) / 1000.0) * (%(now)s - created) AS ended
        FROM (
          SELECT i, scale_h('su' || i) % (%(users)s - {HEAVY_USERS}) AS u, scale_h('s2' || i) AS h2,
                 CASE WHEN i % 1000 = 999 THEN 'stale' WHEN i % 100 < 30 THEN 'open' ELSE 'ended' END AS kind,
                 CASE WHEN i % 1000 = 999 THEN %(now)s - 40 * {day}
                      WHEN i % 100 < 30 THEN %(now)s - (scale_h('s1' || i) % 2592000) * interval '1 second'
                      ELSE %(now)s - (scale_h('s1' || i) % 12960000) * interval '1 second' END AS created
          FROM generate_series(1, %(sessions)s) i OFFSET 0
        ) a OFFSET 0
      ) b"""
    heavy_sessions = f"""
      INSERT INTO sessions (id, token_hash, user_id, created_at, last_active_at, expires_at, auth_time, amr, acr,
                            ip, user_agent, app_version)
      SELECT scale_uuid('hs' || n), scale_sha('hst' || n), scale_uuid('u' || (1 + (n - 1) / {HEAVY_SESSIONS})),
             %(now)s - (n % 1000) * interval '1 hour', %(now)s - (n % 600) * interval '1 minute',
             %(now)s - (n % 1000) * interval '1 hour' + 90 * {day}, %(now)s - (n % 1000) * interval '1 hour',
             '["pwd"]'::json, 'urn:idp:acr:1fa', '192.0.2.' || (n % 250), (%(user_agents)s::text[])[1 + n % 5],
             '3.2.' || (n % 10)
      FROM generate_series(1, {HEAVY_USERS * HEAVY_SESSIONS}) n"""
    # Two relying apps: the web app (back-channel logout URI) on two thirds of the sessions, the
    # mobile app (public, none) on two thirds; a third have both. Heavy sessions have the web app.
    session_clients = f"""
      INSERT INTO session_clients (session_id, client_id, first_seen_at, last_seen_at)
      SELECT id, %(web)s, created_at, last_active_at FROM sessions
       WHERE scale_h(id) % 3 <> 0 OR user_id IN (SELECT scale_uuid('u' || g) FROM generate_series(1, {HEAVY_USERS}) g)
      UNION ALL
      SELECT id, %(mobile)s, created_at, last_active_at FROM sessions
       WHERE scale_h(id) % 3 <> 2
         AND user_id NOT IN (SELECT scale_uuid('u' || g) FROM generate_series(1, {HEAVY_USERS}) g)"""
    # Grants: family j belongs to session 1 + (j - 1) % sessions; ending a session revoked its
    # families; one in fifty was revoked by a reused refresh token; absolute expiry 90 days.
    families = f"""
      INSERT INTO token_families (id, client_id, user_id, session_id, scope, auth_time, acr, amr, nonce, created_at,
                                  expires_at, revoked_at, revoke_reason)
      SELECT scale_uuid('f' || j), CASE WHEN scale_h(s.id) % 3 = 0 THEN %(mobile)s ELSE %(web)s END, s.user_id, s.id,
             %(scope)s, s.auth_time, s.acr, s.amr, 'n' || j, fc, fc + 90 * {day},
             CASE WHEN s.ended_at IS NOT NULL THEN greatest(fc, s.ended_at)
                  WHEN j % 50 = 0 THEN least(%(now)s, fc + {day}) END,
             CASE WHEN s.ended_at IS NOT NULL THEN 'session_ended' WHEN j % 50 = 0 THEN 'refresh_token_reused' END
      FROM (SELECT j, 1 + (j - 1) % %(sessions)s AS sn FROM generate_series(1, %(families)s) j) g
      JOIN sessions s ON s.id = scale_uuid('s' || g.sn)
      CROSS JOIN LATERAL (SELECT least(s.last_active_at, s.created_at + ((j - 1) / %(sessions)s) * {day}) AS fc OFFSET 0) c"""
    heavy_families = f"""
      INSERT INTO token_families (id, client_id, user_id, session_id, scope, auth_time, acr, amr, created_at,
                                  expires_at)
      SELECT scale_uuid('hf' || n), %(web)s, s.user_id, s.id, %(scope)s, s.auth_time, s.acr, s.amr, s.created_at,
             s.created_at + 90 * {day}
      FROM generate_series(1, {HEAVY_USERS * HEAVY_SESSIONS}) n JOIN sessions s ON s.id = scale_uuid('hs' || n)"""
    # Refresh tokens rotate: family j's tokens are j, j + families, …; all but the newest are used.
    # The newest of a live grant was issued within the week; expiry is 14 days idle, capped by the family.
    refresh = f"""
      INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, used_at)
      SELECT scale_sha('rt' || k), f.id, created, least(created + 14 * {day}, f.expires_at),
             CASE WHEN NOT newest THEN least(%(now)s, created + {day}) END
      FROM (SELECT k, 1 + (k - 1) % %(families)s AS fj, (k - 1) / %(families)s AS r,
                   k + %(families)s > %(refresh)s AS newest
            FROM generate_series(1, %(refresh)s) k) g
      JOIN token_families f ON f.id = scale_uuid('f' || g.fj)
      CROSS JOIN LATERAL (SELECT CASE WHEN newest AND f.revoked_at IS NULL
                                      THEN greatest(f.created_at, %(now)s - (scale_h('rt' || k) % 604800) * interval '1 second')
                                      ELSE least(f.created_at + r * {day}, coalesce(f.revoked_at, %(now)s)) END AS created
                          OFFSET 0) c"""
    heavy_refresh = f"""
      INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
      SELECT scale_sha('hrt' || n), f.id, %(now)s - interval '2 minutes', %(now)s + 14 * {day}
      FROM generate_series(1, {HEAVY_USERS * HEAVY_SESSIONS}) n JOIN token_families f ON f.id = scale_uuid('hf' || n)"""
    # Codes live a minute; code c was exchanged for family c (same session), one in two hundred never was.
    codes = """
      INSERT INTO authorization_codes (code_hash, client_id, user_id, session_id, redirect_uri, scope, nonce,
                                       code_challenge, code_challenge_method, auth_time, acr, amr, created_at,
                                       expires_at, used_at, family_id)
      SELECT scale_sha('ac' || c), f.client_id, f.user_id, f.session_id,
             CASE WHEN f.client_id = %(web)s THEN %(web_redirect)s ELSE %(mobile_redirect)s END,
             f.scope, f.nonce, scale_b64('cc' || c, 43), 'S256', f.auth_time, f.acr, f.amr,
             f.created_at - interval '2 seconds', f.created_at + interval '58 seconds',
             CASE WHEN c % 200 <> 0 THEN f.created_at - interval '1 second' END,
             CASE WHEN c % 200 <> 0 THEN f.id END
      FROM generate_series(1, %(codes)s) c JOIN token_families f ON f.id = scale_uuid('f' || c)"""
    # The outbox: every ended session with the web app told it; nearly all delivered, one in
    # ninety-seven gave up, a few recent ones wait for a retry an hour from now.
    outbox = """
      INSERT INTO logout_deliveries (id, session_id, client_id, user_id, target_url, logout_token, status, attempts,
                                     next_attempt_at, last_error, created_at, delivered_at)
      SELECT scale_uuid('o' || s.id), s.id, sc.client_id, s.user_id, %(target)s, %(logout_token)s,
             st, CASE st WHEN 'delivered' THEN 1 WHEN 'failed' THEN 12 ELSE 3 END,
             CASE st WHEN 'delivered' THEN s.ended_at + interval '31 seconds'
                     WHEN 'failed' THEN s.ended_at + interval '1 day' ELSE %(now)s + interval '1 hour' END,
             CASE WHEN st <> 'delivered' THEN 'HTTP 503' END, s.ended_at,
             CASE WHEN st = 'delivered' THEN s.ended_at + interval '1 second' END
      FROM sessions s JOIN session_clients sc ON sc.session_id = s.id AND sc.client_id = %(web)s
      CROSS JOIN LATERAL (SELECT CASE WHEN s.ended_at > %(now)s - interval '1 day' AND scale_h(s.id) % 50 = 0
                                      THEN 'pending'
                                      WHEN scale_h(s.id) % 97 = 0 THEN 'failed' ELSE 'delivered' END AS st OFFSET 0) c
      WHERE s.ended_at IS NOT NULL"""
    return [
        [("users", users)],
        [("sessions", sessions), ("sessions (heavy users)", heavy_sessions)],
        [("session_clients", session_clients), ("token_families", families),
         ("token_families (heavy users)", heavy_families)],
        [("refresh_tokens", refresh), ("refresh_tokens (heavy users)", heavy_refresh)],
        [("authorization_codes", codes), ("logout_deliveries", outbox)],
    ]


FILLED_TABLES = ["users", "sessions", "session_clients", "token_families", "refresh_tokens",
                 "authorization_codes", "logout_deliveries"]


def fill(dep: ScaleDeployment, params: dict) -> dict:
    """Fill with foreign-key triggers off and secondary indexes dropped, then rebuild them: the
    schema ends exactly as `idp init` made it, in a fraction of the time row-by-row checks take."""
    timings: dict = {}
    started = time.monotonic()

    def connect():
        conn = psycopg.connect(dep.dsn, autocommit=True)
        conn.execute("SET session_replication_role = replica")  # no FK triggers while filling
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET work_mem = '256MB'")
        conn.execute("SET maintenance_work_mem = '512MB'")
        return conn

    with psycopg.connect(dep.dsn, autocommit=True) as conn:
        conn.execute(FILL_FUNCTIONS)
        indexes = conn.execute(
            """SELECT indexname, indexdef FROM pg_indexes i
               WHERE schemaname = 'public' AND tablename = ANY(%s)
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)""",
            (FILLED_TABLES,)).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')

    conns = [connect(), connect()]
    try:
        for stage in fill_statements(params):
            def run(job, conn):
                name, sql = job
                t0 = time.monotonic()
                # psycopg reads % as a placeholder; the statements use it as modulo.
                rows = conn.execute(sql.replace(" % ", " %% "), params).rowcount
                return name, rows, time.monotonic() - t0

            # Two connections: two statements of a stage at a time, one per core.
            with ThreadPoolExecutor(2) as pool:
                pending = list(stage)
                while pending:
                    batch, pending = pending[:2], pending[2:]
                    for name, rows, seconds in pool.map(run, batch, conns[:len(batch)]):
                        timings[name] = {"rows": rows, "seconds": round(seconds, 2)}
                        log(f"  {name}: {rows:,} rows in {seconds:.1f} s")

        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            jobs = [definition for _, definition in indexes]
            list(pool.map(lambda pair: pair[1].execute(pair[0]),
                          [(jobs[k], conns[k % 2]) for k in range(len(jobs))]))
        timings["rebuild secondary indexes"] = {"indexes": len(indexes), "seconds": round(time.monotonic() - t0, 2)}
        log(f"  {len(indexes)} secondary indexes rebuilt in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda pair: pair[1].execute(f"VACUUM (ANALYZE) {pair[0]}"),
                          [(t, conns[k % 2]) for k, t in enumerate(FILLED_TABLES)]))
        timings["vacuum analyze"] = {"seconds": round(time.monotonic() - t0, 2)}
        conns[0].execute(DROP_FILL_FUNCTIONS)
    finally:
        for conn in conns:
            conn.close()
    timings["total_seconds"] = round(time.monotonic() - started, 1)
    return timings


def table_sizes(dsn: str) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY(%s)""", (FILLED_TABLES,)).fetchall()
        total = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"tables": {name: {"rows": rows_, "mib": round(size / 2**20, 1)} for name, rows_, size in sorted(rows)},
            "database_mib": round(total / 2**20, 1)}


# --------------------------------------------------------------------------------------------- explain

class PlanCapture:
    """While active, every statement the app sends is first run as EXPLAIN (ANALYZE, BUFFERS) inside a
    savepoint that is rolled back, so writes are planned and measured without happening twice."""

    def __init__(self, engine):
        self.engine = engine
        self.plans: list[dict] = []
        self._seen: set[str] = set()

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        key = re.sub(r"\s+", " ", statement).strip()
        if executemany or key in self._seen or not key.split(" ", 1)[0].upper() in ("SELECT", "UPDATE", "DELETE",
                                                                                    "INSERT", "WITH"):
            return
        self._seen.add(key)
        cursor.execute("SAVEPOINT scale_explain")
        try:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("ROLLBACK TO SAVEPOINT scale_explain")
        self.plans.append({"sql": key[:2000], "plan": plan})

    @contextmanager
    def active(self):
        from sqlalchemy import event

        event.listen(self.engine, "before_cursor_execute", self._before)
        try:
            yield self
        finally:
            event.remove(self.engine, "before_cursor_execute", self._before)

    def take(self) -> list[dict]:
        plans, self.plans, self._seen = self.plans, [], set()
        return plans


def plan_text(conn, sql: str, params=None) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement in a transaction that is rolled back."""
    with conn.transaction(force_rollback=True):
        return "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall())


def plan_summary(plan: str) -> str:
    """Execution time and the scans (and foreign-key triggers) of a plan: enough to compare two plans."""
    if not plan:
        return "-"
    timing = re.search(r"Execution Time: ([\d.]+) ms", plan)
    scans = []
    for match in re.finditer(r"((?:Parallel )?(?:Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan|Tid Scan)"
                             r"(?: using \S+)? on \S+)", plan):
        if match.group(1) not in scans:
            scans.append(match.group(1))
    triggers = re.findall(r"Trigger for constraint (\S+): time=([\d.]+)", plan)
    slow = [f"{name} {float(t):.0f} ms" for name, t in triggers if float(t) >= 1]
    return (f"{timing.group(1) if timing else '?'} ms; " + ", ".join(scans)
            + (f"; triggers: {', '.join(slow)}" if slow else ""))


# The indexes migration 0005 adds, each with the query that asked for it (EXPLAINed with the index
# dropped inside a rolled-back transaction, and with it).
def index_evidence_queries(p: dict) -> list[dict]:
    return [
        {"index": "ix_sessions_open_idle",
         "why": "the end-expired sweep runs every second in every worker: open sessions idle too long",
         "drop": ["ix_sessions_open_idle"],
         "sql": "SELECT id FROM sessions WHERE ended_at IS NULL AND last_active_at <= %(idle_before)s "
                "ORDER BY last_active_at LIMIT 200",
         "params": {"idle_before": p["now"] - dt.timedelta(days=14)}},
        {"index": "ix_sessions_open_expiry",
         "why": "the end-expired sweep: open sessions past their absolute lifetime",
         "drop": ["ix_sessions_open_expiry"],
         "sql": "SELECT id FROM sessions WHERE ended_at IS NULL AND expires_at <= %(now)s ORDER BY expires_at LIMIT 200",
         "params": {"now": p["now"]}},
        {"index": "(none: the sweep as one OR query, as it was)",
         "why": "with both limits OR-ed the planner guessed from all sessions and chose a sequential scan even "
                "with the partial indexes; the sweep now asks one ordered query per limit",
         "drop": [],
         "sql": "SELECT id FROM sessions WHERE ended_at IS NULL AND (expires_at <= %(now)s OR "
                "last_active_at <= %(idle_before)s) LIMIT 200",
         "params": {"now": p["now"], "idle_before": p["now"] - dt.timedelta(days=14)}},
        {"index": "ix_sessions_ended_at",
         "why": "purge finds sessions ended before the retention cut-off",
         "drop": ["ix_sessions_ended_at"],
         "sql": "DELETE FROM sessions WHERE ctid IN (SELECT ctid FROM sessions WHERE ended_at < %(cut)s AND NOT "
                "EXISTS (SELECT 1 FROM token_families f WHERE f.session_id = sessions.id AND f.revoked_at IS NULL) "
                "LIMIT 5000 FOR UPDATE SKIP LOCKED)",
         "params": {"cut": p["now"] - dt.timedelta(days=30)}},
        {"index": "ix_authorization_codes_session_id",
         "why": "deleting a session cascades to its codes: without the index every deleted session scans "
                "authorization_codes (see the trigger time)",
         "drop": ["ix_authorization_codes_session_id"],
         "sql": "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE ended_at IS NOT NULL LIMIT 50)",
         "params": {}},
        {"index": "ix_refresh_tokens_expires_at",
         "why": "purge finds expired refresh tokens",
         "drop": ["ix_refresh_tokens_expires_at"],
         "sql": "DELETE FROM refresh_tokens WHERE ctid IN (SELECT ctid FROM refresh_tokens "
                "WHERE expires_at < %(cut)s LIMIT 5000 FOR UPDATE SKIP LOCKED)",
         "params": {"cut": p["now"] - dt.timedelta(hours=1)}},
        {"index": "ix_token_families_expires_at / ix_token_families_revoked_at",
         "why": "purge finds grants past their absolute expiry or revoked",
         "drop": ["ix_token_families_expires_at", "ix_token_families_revoked_at"],
         "sql": "DELETE FROM token_families WHERE ctid IN (SELECT ctid FROM token_families WHERE expires_at < "
                "%(cut)s OR revoked_at < %(cut)s LIMIT 5000 FOR UPDATE SKIP LOCKED)",
         "params": {"cut": p["now"] - dt.timedelta(hours=1)}},
        {"index": "ix_authorization_codes_user_id",
         "why": "considered, not added: deleting an account cascades to its codes by user_id; with the purge "
                "running the table holds about an hour of rows",
         "drop": ["ix_authorization_codes_user_id"],
         "sql": "DELETE FROM users WHERE id = %(user)s",
         "params": {"user": p["sample_user"]}},
    ]


def merge_evidence(before: list[dict], after: list[dict]) -> list[dict]:
    """Each index with its query's plans on the filled database (never purged) and after the purge."""
    merged = []
    for b, a in zip(before, after):
        merged.append({"index": a["index"], "why": a["why"], "sql": a["sql"],
                       "filled_never_purged": {k: b[k] for k in ("plan_with_index", "plan_without_index", "summary")},
                       "after_purge": {k: a[k] for k in ("plan_with_index", "plan_without_index", "summary")}})
    return merged


def index_evidence(dsn: str, p: dict) -> list[dict]:
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        existing = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        for item in index_evidence_queries(p):
            present = [name for name in item["drop"] if name in existing]
            entry = {"index": item["index"], "why": item["why"], "sql": item["sql"]}
            with_plan = plan_text(conn, item["sql"], item["params"])
            entry["plan_with_index"] = with_plan
            if present:
                with conn.transaction(force_rollback=True):
                    for name in present:
                        conn.execute(f'DROP INDEX "{name}"')
                    entry["plan_without_index"] = "\n".join(
                        r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + item["sql"], item["params"]))
            else:
                entry["plan_without_index"] = None
                entry["note"] = "index not present in this schema"
            entry["summary"] = {"with": plan_summary(with_plan),
                                "without": plan_summary(entry["plan_without_index"] or "")}
            out.append(entry)
    return out


# ------------------------------------------------------------------------------------------ in-process

def make_app(dep: ScaleDeployment):
    from idp import create_app
    from idp.settings import load_settings

    env = {k: v for k, v in dep.env.items() if k.startswith("IDP_")}
    app = create_app(load_settings(environ=env))
    # The admin-API measurement below is the one that delivers; here only the queueing is timed.
    app.config["IDP_DELIVER_LOGOUTS_IMMEDIATELY"] = False
    return app


def mint_access_token(app, client_id: str, session_id: str) -> str:
    """A real access token for a filled session, through the code the token endpoint uses."""
    from idp.extensions import db
    from idp.storage.models import BrowserSession, Client

    svc = app.extensions["idp"]
    session = db.session.get(BrowserSession, session_id)
    client = db.session.get(Client, client_id)
    code = svc.grants.create_code(client_id=client_id, user_id=session.user_id, session_id=session_id,
                                  redirect_uri=REDIRECT_URI, scope=SESSION_SCOPE, nonce=None, code_challenge=None,
                                  code_challenge_method=None, auth_time=session.auth_time, acr=session.acr,
                                  amr=session.amr)
    row = svc.grants.consume_code(code, client_id)
    return svc.grants.issue_for_code(row, client, with_refresh=False).access_token


def pick_users(dsn: str, count: int, min_open: int = 1) -> list[tuple[str, str, int]]:
    """Random non-heavy users with open sessions: (user id, one open session id, open sessions)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            """SELECT user_id, min(id), count(*) FROM sessions
               WHERE ended_at IS NULL AND last_active_at > now() - interval '14 days'
                 AND user_id IN (SELECT id FROM users WHERE email LIKE 'user%%' ORDER BY random() LIMIT %s)
               GROUP BY user_id HAVING count(*) >= %s LIMIT %s""", (count * 3, min_open, count)).fetchall()


def heavy_user(n: int) -> tuple[str, str]:
    import hashlib
    import uuid

    def md5_uuid(text: str) -> str:
        return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))

    return md5_uuid(f"u{n}"), md5_uuid(f"hs{(n - 1) * HEAVY_SESSIONS + 1}")


def _count_until_none(conn, sql: str, started: float, timeout: float) -> int:
    """Count again every half second until nothing is left or the time is up; the last count."""
    while True:
        left = conn.execute(sql).fetchone()[0]
        if not left or time.monotonic() - started > timeout:
            return left
        time.sleep(0.5)


def wait_for_sweep(dsn: str, timeout: float = 60) -> dict:
    """The server's outbox threads end the filled sessions that are past their idle limit (200 a pass)
    and send their logouts; measuring starts once that burst is over, so it does not colour the figures."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        left = _count_until_none(conn, "SELECT count(*) FROM sessions WHERE ended_at IS NULL AND (expires_at <= now() "
                                       "OR last_active_at <= now() - interval '14 days')", started, timeout)
        pending = conn.execute("SELECT count(*) FROM logout_deliveries WHERE status = 'pending' "
                               "AND next_attempt_at <= now()").fetchone()[0]
    time.sleep(2 if pending else 0)
    return {"seconds": round(time.monotonic() - started, 1), "stale_sessions_left": left}


def wait_for_outbox(dsn: str, timeout: float = 60) -> dict:
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        due = _count_until_none(conn, "SELECT count(*) FROM logout_deliveries WHERE status = 'pending' "
                                      "AND next_attempt_at <= now() + interval '1 minute'", started, timeout)
    return {"seconds": round(time.monotonic() - started, 1), "pending_left": due}


def measure_session_list(app, base_url: str, client_id: str, users: list, calls: int) -> dict:
    """GET /api/me/sessions over HTTP with each user's own token, and the service calls behind it."""
    from idp.api.serializers import sessions_json
    from idp.extensions import db

    with app.app_context():
        tokens = [(uid, mint_access_token(app, client_id, sid), count) for uid, sid, count in users]
        db.session.remove()
    http = requests.Session()
    for _, token, _ in tokens[:5]:  # warm the server's connection pool and caches
        http.get(base_url + "/api/me/sessions", headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT)
    times, sizes = [], []
    for k in range(calls):
        uid, token, _ = tokens[k % len(tokens)]
        t0 = time.perf_counter()
        response = http.get(base_url + "/api/me/sessions", headers={"Authorization": f"Bearer {token}"},
                            timeout=HTTP_TIMEOUT)
        times.append(ms(time.perf_counter() - t0))
        if response.status_code != 200:
            raise BenchError(f"/api/me/sessions answered {response.status_code}: {response.text[:200]}")
        sizes.append(len(response.json()["sessions"]))
    service = []
    with app.app_context():
        svc = app.extensions["idp"]
        for k in range(calls):
            uid = tokens[k % len(tokens)][0]
            t0 = time.perf_counter()
            sessions_json(svc.sessions.active_for_user(uid), None)
            db.session.commit()
            service.append(ms(time.perf_counter() - t0))
        db.session.remove()
    return {"http": summary(times), "service": summary(service), "users": len(tokens),
            "sessions_listed": {"min": min(sizes), "median": statistics.median(sizes), "max": max(sizes)}}


def capture_hot_plans(app, p: dict, typical: tuple, heavy_explain_user: str) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements the code sends on each hot path."""
    from idp.api.serializers import sessions_json
    from idp.extensions import db
    from idp.services.purge import Purger

    plans = {}
    with app.app_context():
        svc = app.extensions["idp"]
        capture = PlanCapture(db.engine)
        with capture.active():
            sessions_json(svc.sessions.active_for_user(typical[0]), None)
            db.session.commit()
            plans["session list (typical user)"] = capture.take()
            sessions_json(svc.sessions.active_for_user(heavy_explain_user), None)
            db.session.commit()
            plans["session list (heavy user, 1,000 open)"] = capture.take()
            svc.grants.find_refresh_token("rt1")
            db.session.commit()
            plans["refresh token lookup"] = capture.take()
            svc.sessions.from_cookie("st1")
            db.session.commit()
            plans["session cookie lookup (every page)"] = capture.take()
            svc.sessions.end_all_for_user(heavy_explain_user, "ended_by_admin", actor_type="system")
            plans["end all sessions of a heavy user (statements as sent)"] = capture.take()
            svc.sessions.end_expired(limit=200)
            plans["end-expired sweep (outbox worker, every second)"] = capture.take()[:3]
        purger = Purger(svc.settings)
        batches = []
        with db.engine.connect() as conn, capture.active():
            for name, model, condition in purger.plan():
                trans = conn.begin()
                try:
                    conn.execute(purger.batch_statement(model, condition, 5000))
                finally:
                    trans.rollback()
                batches += [{"table": name, **p} for p in capture.take()]
        plans["purge batch deletes (5,000 rows each)"] = batches
        db.session.remove()
    return plans


# ------------------------------------------------------------------------------------------ purge run

class SignInLoad:
    """Keeps signing in through the hosted form (real HTTP, argon2 and all) and, beside it, a probe
    that writes what a sign-in writes (a session, a code, a grant and its tokens) straight to
    PostgreSQL, one short transaction each: the probe shows lock waits the HTTP noise would hide."""

    def __init__(self, dep: ScaleDeployment, rp: dict, user_id: str):
        self.dep, self.rp, self.user_id = dep, rp, user_id
        self.stop = threading.Event()
        self.http: list[tuple[float, float]] = []  # (start, seconds)
        self.probe: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []

    def _http_loop(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                sign_in(self.dep.issuer, self.rp["client_id"], self.rp["client_secret"])
                self.http.append((t0, time.monotonic() - t0))
            except (BenchError, requests.RequestException) as exc:
                self.errors.append(str(exc)[:200])
                time.sleep(0.1)

    def _probe_loop(self):
        web = self.rp["client_id"]
        with psycopg.connect(self.dep.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                tag = secrets.token_hex(8)
                t0 = time.monotonic()
                with conn.transaction():
                    conn.execute(
                        """INSERT INTO sessions (id, token_hash, user_id, created_at, last_active_at, expires_at,
                                                 auth_time, amr, acr)
                           VALUES (%(sid)s, %(th)s, %(uid)s, now(), now(), now() + interval '90 days', now(),
                                   '["pwd"]', 'urn:idp:acr:1fa')""",
                        {"sid": f"probe-{tag}", "th": secrets.token_hex(32), "uid": self.user_id})
                    conn.execute("INSERT INTO session_clients VALUES (%s, %s, now(), now())", (f"probe-{tag}", web))
                    conn.execute(
                        """INSERT INTO authorization_codes (code_hash, client_id, user_id, session_id, redirect_uri,
                               scope, auth_time, acr, amr, created_at, expires_at, used_at)
                           VALUES (%(ch)s, %(web)s, %(uid)s, %(sid)s, %(ru)s, 'openid', now(), 'urn:idp:acr:1fa',
                                   '["pwd"]', now(), now() + interval '60 seconds', now())""",
                        {"ch": secrets.token_hex(32), "web": web, "uid": self.user_id, "sid": f"probe-{tag}",
                         "ru": REDIRECT_URI})
                    conn.execute(
                        """INSERT INTO token_families (id, client_id, user_id, session_id, scope, amr, created_at,
                                                       expires_at)
                           VALUES (%(fid)s, %(web)s, %(uid)s, %(sid)s, 'openid', '[]', now(),
                                   now() + interval '90 days')""",
                        {"fid": f"probe-{tag}", "web": web, "uid": self.user_id, "sid": f"probe-{tag}"})
                    conn.execute(
                        """INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
                           VALUES (%s, %s, now(), now() + interval '14 days')""",
                        (secrets.token_hex(32), f"probe-{tag}"))
                self.probe.append((t0, time.monotonic() - t0))
                time.sleep(0.005)

    def start(self, http_threads: int = 2) -> SignInLoad:
        for target, count in ((self._http_loop, http_threads), (self._probe_loop, 1)):
            for _ in range(count):
                thread = threading.Thread(target=target, daemon=True)
                thread.start()
                self.threads.append(thread)
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(HTTP_TIMEOUT + 5)

    def window(self, start: float, end: float) -> dict:
        def within(samples):
            return [ms(seconds) for t0, seconds in samples if start <= t0 <= end]

        return {"http_sign_in": summary(within(self.http)), "probe_sign_in_writes": summary(within(self.probe))}


def watch_locks(dsn: str, stop: threading.Event, found: list) -> None:
    """Samples pg_locks every 50 ms: any backend waiting for a lock, and on what."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            rows = conn.execute(
                """SELECT a.pid, left(a.query, 120), l.locktype, l.mode, now() - a.query_start,
                          (SELECT string_agg(left(b.query, 160), ' | ') FROM pg_stat_activity b
                            WHERE b.pid = ANY(pg_blocking_pids(a.pid)))
                   FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE NOT l.granted AND a.datname = current_database()""").fetchall()
            found.extend({"pid": r[0], "query": r[1], "locktype": r[2], "mode": r[3], "waiting": str(r[4]),
                          "blocked_by": r[5], "blocked_by_purge": "SKIP LOCKED" in (r[5] or "")} for r in rows)
            found.append(None)  # one sample taken
            time.sleep(0.05)


def run_purge(dep: ScaleDeployment, rp: dict, bench_user_id: str, baseline_seconds: float, limit: float) -> dict:
    load = SignInLoad(dep, rp, bench_user_id).start()
    lock_samples: list = []
    stop_watch = threading.Event()
    watcher = threading.Thread(target=watch_locks, args=(dep.dsn, stop_watch, lock_samples), daemon=True)
    try:
        base_start = time.monotonic()
        time.sleep(baseline_seconds)
        base_end = purge_start = time.monotonic()
        watcher.start()
        try:
            done = subprocess.run([IDP, "purge"], env=dep.env, capture_output=True, text=True, timeout=limit,
                                  cwd=ROOT)
        except subprocess.TimeoutExpired:
            raise BenchError(f"idp purge took longer than {limit:.0f} s") from None
        purge_end = time.monotonic()
        stop_watch.set()
        if done.returncode != 0:
            raise BenchError(f"idp purge failed: {done.stderr.strip()[-2000:]}")
        output = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        stop_watch.set()
        load.finish()
    waits = [s for s in lock_samples if s is not None]
    seconds = purge_end - purge_start
    return {
        "output": output,
        "wall_seconds": round(seconds, 2),
        "rows_per_second": round(output["total"] / seconds) if seconds else None,
        "before_purge": load.window(base_start, base_end),
        "during_purge": load.window(purge_start, purge_end),
        "lock_wait_samples": {"samples": len(lock_samples) - len(waits), "waiting_seen": len(waits),
                              "waiting_on_purge": sum(w["blocked_by_purge"] for w in waits),
                              "examples": waits[:10]},
        "sign_in_errors": load.errors[:10],
    }


# ---------------------------------------------------------------------------------------------- output

def print_table(r: dict) -> None:
    def row(name, value):
        print(f"  {name:<58} {value}")

    print()
    print(f"idp scale benchmark  {r['started_at']}  ({r['machine']['cpus']} CPUs)")
    f = r["fill"]
    print(f"  fill: {r['sizes']['users']:,} users, {r['sizes']['sessions']:,} sessions, "
          f"{r['sizes']['tokens']:,} tokens in {f['total_seconds']} s; database {r['table_sizes']['database_mib']} MiB")
    sl = r["session_list"]
    for key, label in (("typical", "session list, typical user"), ("heavy", "session list, heavy user (1,000)")):
        h, s = sl[key]["http"], sl[key]["service"]
        row(f"{label}: GET /api/me/sessions p50 / p99",
            f"{h['p50_ms']} / {h['p99_ms']} ms   (service calls {s['p50_ms']} / {s['p99_ms']} ms)")
    ea = r["end_all"]
    row("end all 1,000 sessions: POST /api/admin/users/{id}/logout",
        f"{ea['admin_api']['ms']} ms, {ea['admin_api']['outbox_rows']} logouts queued")
    row("end all 1,000 sessions: Sessions.end_all_for_user (3 users)",
        " / ".join(f"{r['ms']} ms" for r in ea["service"]["runs"]))
    if ea["admin_api"].get("all_delivered_ms") is not None:
        row("  … until the relying app had all 1,000 logout tokens", f"{ea['admin_api']['all_delivered_ms']} ms")
    pu = r["purge"]
    row("idp purge", f"{pu['wall_seconds']} s, {pu['output']['total']:,} rows ({pu['rows_per_second'] or 0:,} rows/s)")
    for table, count in pu["output"]["deleted"].items():
        row(f"  {table}", f"{count:,} rows in {pu['output']['batches'][table]} batches")
    for phase in ("before_purge", "during_purge"):
        w = pu[phase]
        row(f"sign-ins {phase.replace('_', ' ')}: HTTP p50 / max",
            f"{w['http_sign_in'].get('p50_ms')} / {w['http_sign_in'].get('max_ms')} ms "
            f"(n={w['http_sign_in']['n']})")
        row(f"sign-in writes {phase.replace('_', ' ')}: probe p50 / max",
            f"{w['probe_sign_in_writes'].get('p50_ms')} / {w['probe_sign_in_writes'].get('max_ms')} ms "
            f"(n={w['probe_sign_in_writes']['n']})")
    lw = pu["lock_wait_samples"]
    row("lock waits seen during purge (any / behind the purge)",
        f"{lw['waiting_seen']} / {lw['waiting_on_purge']} in {lw['samples']} samples of pg_locks")
    print("  indexes (EXPLAIN ANALYZE execution time without → with; filled database, then after the purge):")
    for item in r["index_evidence"]:
        print(f"    {item['index']}")
        for phase in ("filled_never_purged", "after_purge"):
            summary_ = item[phase]["summary"]
            print(f"      {phase:<20} without: {summary_['without']}")
            print(f"      {'':<20} with:    {summary_['with']}")
    print(f"  wrote {r['results_file']}")


# ----------------------------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Scale benchmark of idp on a filled PostgreSQL (bench/README.md).")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--tokens", type=int, default=5_000_000,
                        help="token families + refresh tokens + authorization codes")
    parser.add_argument("--quick", action="store_true", help="2,000 users, 20,000 sessions, 100,000 tokens")
    parser.add_argument("--list-calls", type=int, default=2000, help="session-list calls for typical users")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of idp serve")
    parser.add_argument("--time-limit", type=int, default=540, help="seconds before the run gives up and cleans up")
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.sessions, args.tokens = 2000, 20_000, 100_000
    if args.users < 100 or args.sessions < 1000 or args.tokens < 1000:
        parser.error("need --users >= 100, --sessions >= 1000, --tokens >= 1000")
    if args.users > 10_000_000 or args.sessions > 50_000_000 or args.tokens > 200_000_000:
        parser.error("sizes above 10M users / 50M sessions / 200M tokens are not supported")
    if not 60 <= args.time_limit <= 3600 or not 10 <= args.list_calls <= 100_000 or not 1 <= args.workers <= 16:
        parser.error("need 60 <= --time-limit <= 3600, 10 <= --list-calls <= 100000, 1 <= --workers <= 16")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)

    def interrupted(*_):
        raise KeyboardInterrupt()

    def out_of_time(*_):
        raise BenchError(f"the run took longer than --time-limit {args.time_limit} s")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.time_limit)

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp.lower()}_{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix="idp-scale-"))
    dep = ScaleDeployment(run_id, workdir)
    receiver = LogoutReceiver()
    server: Server | None = None
    app = None
    started = time.monotonic()
    results: dict = {
        "started_at": stamp,
        "sizes": {"users": args.users, "sessions": args.sessions, "tokens": args.tokens,
                  "heavy_users": HEAVY_USERS, "heavy_sessions_each": HEAVY_SESSIONS},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "note": "the filler, idp, PostgreSQL and Redis share this machine's CPUs"},
    }
    ok = False
    try:
        dep.create_database()
        receiver.start()
        log(f"database {dep.db_name}, redis prefix {dep.redis_prefix}, workdir {workdir}")
        results["init"] = dep.cli("init")
        bench_user = dep.cli("users", "create", "--email", EMAIL, "--password", PASSWORD, "--name", "Bench User")
        web = dep.cli("clients", "create", "--name", "scale web app", "--first-party", "--redirect-uri",
                      REDIRECT_URI, "--grant-type", "authorization_code", "--grant-type", "refresh_token",
                      "--scope", SESSION_SCOPE, "--backchannel-logout-uri", receiver.url)
        mobile = dep.cli("clients", "create", "--name", "scale mobile app", "--public", "--first-party",
                         "--redirect-uri", "com.example.scale:/cb", "--scope", SESSION_SCOPE)
        machine = dep.cli("clients", "create", "--name", "scale machine", "--grant-type", "client_credentials",
                          "--scope", "openid")
        admin = dep.cli("clients", "create", "--name", "scale admin", "--grant-type", "client_credentials",
                        "--scope", "admin")

        app = make_app(dep)
        from argon2 import PasswordHasher

        from idp.extensions import db
        from idp.oidc.backchannel import logout_token
        from idp.storage.models import Client

        with app.app_context():
            settings = app.extensions["idp"].settings
            password_hash = PasswordHasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib,
                                           parallelism=settings.argon2_parallelism).hash(secrets.token_urlsafe(16))
            sample_logout_token = logout_token(db.session.get(Client, web["client_id"]), "sample-sid", "sample-sub")
            db.session.remove()
        # Token rows: 25 % grants, 65 % refresh tokens (rotations), 10 % codes.
        tokens = args.tokens - 2 * HEAVY_USERS * HEAVY_SESSIONS
        families = max(1, tokens // 4)
        now = dt.datetime.now(dt.timezone.utc)
        params = {
            "now": now, "users": args.users, "sessions": max(1, args.sessions - HEAVY_USERS * HEAVY_SESSIONS),
            "families": families, "refresh": max(families, tokens * 13 // 20),
            "codes": max(1, min(families, tokens // 10)), "password_hash": password_hash,
            "user_agents": USER_AGENTS, "web": web["client_id"], "mobile": mobile["client_id"],
            "machine": machine["client_id"], "scope": SCOPE, "web_redirect": REDIRECT_URI,
            "mobile_redirect": "com.example.scale:/cb", "target": receiver.url, "logout_token": sample_logout_token,
        }
        log(f"filling: {args.users:,} users, {args.sessions:,} sessions, {args.tokens:,} tokens")
        results["fill"] = fill(dep, params)
        results["table_sizes"] = table_sizes(dep.dsn)

        heavy_api_user, heavy_api_session = heavy_user(1)
        heavy_service_users = [heavy_user(n)[0] for n in (2, 3, 4)]
        heavy_explain_user, _ = heavy_user(5)
        typical = pick_users(dep.dsn, 200)
        if not typical:
            raise BenchError("no users with open sessions were filled")
        log("EXPLAIN (ANALYZE, BUFFERS) of the hot paths")
        with psycopg.connect(dep.dsn, autocommit=True) as conn:
            first_user = conn.execute("SELECT user_id FROM sessions WHERE ended_at IS NULL AND user_id NOT IN "
                                      "(SELECT id FROM users WHERE email LIKE 'heavy%%') LIMIT 1").fetchone()[0]
        before_purge_evidence = index_evidence(dep.dsn, {"now": now, "sample_user": first_user})
        results["plans"] = capture_hot_plans(app, {"web": web["client_id"]}, typical[0], heavy_explain_user)

        server = Server("idp serve", [IDP, "serve", "--host", "127.0.0.1", "--port", str(dep.port),
                                      "--workers", str(args.workers)],
                        dep.env, workdir / "idp-serve.log", dep.issuer, "/.well-known/openid-configuration")
        log(f"starting idp serve on {dep.issuer}")
        server.start()

        results["sweep_after_start"] = wait_for_sweep(dep.dsn)
        results["load_average_before_measuring"] = os.getloadavg()
        log(f"session list: {args.list_calls} calls over {len(typical)} typical users, 200 for a heavy user")
        results["session_list"] = {
            "typical": measure_session_list(app, dep.issuer, web["client_id"], typical, args.list_calls),
            "heavy": measure_session_list(app, dep.issuer, web["client_id"],
                                          [(heavy_api_user, heavy_api_session, HEAVY_SESSIONS)], 200),
            "target": "p99 < 10 ms for typical users",
        }

        log("ending all 1,000 sessions of a heavy user through the admin API")
        token = requests.post(f"{dep.issuer}/token", data={"grant_type": "client_credentials", "scope": "admin"},
                              auth=(admin["client_id"], admin["client_secret"]), timeout=HTTP_TIMEOUT)
        if token.status_code != 200:
            raise BenchError(f"admin token: {token.status_code} {token.text[:200]}")
        admin_token = token.json()["access_token"]
        heavy_sids = set()
        with psycopg.connect(dep.dsn, autocommit=True) as conn:
            heavy_sids = {r[0] for r in conn.execute(
                "SELECT id FROM sessions WHERE user_id = %s AND ended_at IS NULL", (heavy_api_user,))}
        t0 = time.monotonic()
        response = requests.post(f"{dep.issuer}/api/admin/users/{heavy_api_user}/logout",
                                 headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
        api_seconds = time.monotonic() - t0
        if response.status_code != 200:
            raise BenchError(f"admin logout: {response.status_code} {response.text[:200]}")
        delivered_at = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with receiver.cond:
                if heavy_sids <= receiver.arrivals.keys():
                    delivered_at = max(receiver.arrivals[s] for s in heavy_sids)
                    break
                receiver.cond.wait(0.5)
        with psycopg.connect(dep.dsn, autocommit=True) as conn:
            queued = conn.execute("SELECT count(*) FROM logout_deliveries WHERE user_id = %s",
                                  (heavy_api_user,)).fetchone()[0]
            revoked = conn.execute("SELECT count(*) FROM token_families WHERE user_id = %s AND revoked_at IS NULL",
                                   (heavy_api_user,)).fetchone()[0]
        results["end_all"] = {"admin_api": {
            "ms": ms(api_seconds), "ended": response.json().get("ended"), "outbox_rows": queued,
            "families_left_unrevoked": revoked,
            "all_delivered_ms": ms(delivered_at - t0) if delivered_at else None,
            "what": "POST /api/admin/users/{id}/logout with an admin client's token; wall time of the request",
        }}
        runs = []
        with app.app_context():
            from idp.extensions import db

            for user_id in heavy_service_users:
                t0 = time.perf_counter()
                ended = app.extensions["idp"].sessions.end_all_for_user(user_id, "ended_by_admin", actor_type="system")
                runs.append({"ms": ms(time.perf_counter() - t0), "ended": ended})
            db.session.remove()
        results["end_all"]["service"] = {"runs": runs, "ms": max(r["ms"] for r in runs),
                                         "what": "Sessions.end_all_for_user in-process, commit included, "
                                                 "three heavy users one after the other; ms is the slowest"}
        results["end_all"]["target"] = "< 1 s including the queued logouts"

        # The server's outbox loops deliver what the in-process runs queued; the purge starts after.
        results["outbox_drain_before_purge"] = wait_for_outbox(dep.dsn)
        log("idp purge under sign-in load")
        results["purge"] = run_purge(dep, web, bench_user["id"], baseline_seconds=5,
                                     limit=max(60, args.time_limit - (time.monotonic() - started) - 30))
        results["load_average_after_purge"] = os.getloadavg()
        results["rss_after"] = server.rss()
        server.stop()

        # In the steady state a purge leaves behind: few rows match its conditions, the sweep finds
        # no stale sessions. That is where an index shows what it is for.
        log("EXPLAIN of each new index's query, with and without it, after the purge")
        with psycopg.connect(dep.dsn, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) sessions, token_families, refresh_tokens, authorization_codes, "
                         "logout_deliveries, users")
            sample_user = conn.execute("SELECT user_id FROM sessions WHERE ended_at IS NULL AND user_id NOT IN "
                                       "(SELECT id FROM users WHERE email LIKE 'heavy%%') LIMIT 1").fetchone()[0]
        results["index_evidence"] = merge_evidence(before_purge_evidence, index_evidence(
            dep.dsn, {"now": dt.datetime.now(dt.timezone.utc), "sample_user": sample_user}))

        results["total_seconds"] = round(time.monotonic() - started, 1)
        write_results(results, f"scale-{stamp}.json")
        print_table(results)
        ok = True
        return 0
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception:
        log(f"failed:\n{traceback.format_exc()}")
        return 1
    finally:
        signal.alarm(0)
        if server is not None:
            try:
                server.stop()
            except Exception as exc:  # keep cleaning up
                log(f"stopping idp serve: {exc}")
        if app is not None:
            try:
                from idp.extensions import db

                with app.app_context():
                    db.session.remove()
                    db.engine.dispose()
            except Exception as exc:
                log(f"closing the in-process app: {exc}")
        tear_down(receiver, dep, workdir, keep=args.keep_workdir or not ok)


if __name__ == "__main__":
    sys.exit(main())
