"""The `idp` command: one JSON object per command on stdout, clear errors on stderr."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from idp.cli import SCHEMA_REVISION, main
from idp.settings import PROJECT_ROOT
from tests.conftest import RUN_ID, fresh_pg_database
from tests.receivers import listener

# Revisions are numbered files (0001_…, 0002_…); the newest is the head.
HEAD_REVISION = sorted(p.name for p in (PROJECT_ROOT / "migrations" / "versions").glob("[0-9]*.py"))[-1][:4]


@pytest.fixture
def run(tmp_path):
    env = {
        "IDP_INSTANCE_DIR": str(tmp_path / "instance"),
        "IDP_DATABASE_URL": "",
        "IDP_REDIS_URL": "",
        "IDP_ARGON2_MEMORY_KIB": "1024",
        "IDP_ARGON2_TIME_COST": "1",
        "IDP_ARGON2_PARALLELISM": "1",
    }

    def invoke(*args, **extra_env):
        result = CliRunner().invoke(main, list(args), env={**env, **extra_env}, catch_exceptions=False)
        return result

    return invoke


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON object, got {result.stdout!r}"
    return json.loads(lines[0])


def test_init_is_idempotent_and_creates_keys_once(run):
    first = _json(run("init"))
    assert first["migrated_to"] == HEAD_REVISION and len(first["keys_created"]) == 2
    again = _json(run("init"))
    assert again["keys_created"] == []


def test_the_schema_revision_serving_commands_expect_is_the_newest_migration():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_REVISION] == [HEAD_REVISION]


def test_a_database_not_initialised_or_unreachable_is_refused_with_a_clear_error(run, pg_url):
    create = ("users", "create", "--email", "owner@example.com", "--password", "a long passphrase here")
    with fresh_pg_database(f"idp_cli_ready_{RUN_ID}") as url:
        refused = run(*create, IDP_DATABASE_URL=url)
        assert refused.exit_code == 2 and json.loads(refused.stderr)["error"] == "database_not_ready"
        assert _json(run("init", IDP_DATABASE_URL=url))["migrated_to"] == SCHEMA_REVISION
        assert _json(run(*create, IDP_DATABASE_URL=url))["email"] == "owner@example.com"
    closed = run(*create, IDP_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    assert closed.exit_code == 2 and json.loads(closed.stderr)["error"] == "database_unavailable"


def test_users_create_prints_the_account_and_refuses_duplicates(run):
    created = _json(run("users", "create", "--email", " Owner@Example.COM ", "--password", "a long passphrase here",
                        "--name", "Owner", "--phone", "+14155550123", "--admin"))
    assert created["email"] == "owner@example.com" and created["is_admin"] is True and created["id"]
    duplicate = run("users", "create", "--email", "owner@example.com", "--password", "another long passphrase")
    assert duplicate.exit_code == 1
    assert json.loads(duplicate.stderr)["error"] == "conflict"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--email", "not-an-email", "--password", "a long passphrase here"], "valid email"),
        (["--email", "x@example.com", "--password", "short"], "at least 12"),
        (["--email", "y@example.com", "--password", "a long passphrase here", "--phone", "0800"], "international"),
    ],
)
def test_users_create_rejects_bad_input(run, args, message):
    result = run("users", "create", *args)
    assert result.exit_code == 1 and result.stdout == ""
    assert message in json.loads(result.stderr)["error_description"]


def test_clients_create_confidential_public_and_machine(run):
    confidential = _json(run("clients", "create", "--name", "Web", "--redirect-uri", "https://rp.example/cb",
                             "--post-logout-redirect-uri", "https://rp.example/bye",
                             "--backchannel-logout-uri", "https://rp.example/bcl", "--first-party"))
    assert confidential["client_secret"] and len(confidential["client_secret"]) >= 43
    assert confidential["grant_types"] == ["authorization_code", "refresh_token"]
    assert confidential["backchannel_logout_uri"] == "https://rp.example/bcl"

    public = _json(run("clients", "create", "--name", "Phone", "--public", "--redirect-uri", "com.example.app:/cb"))
    assert public["client_secret"] is None and public["token_endpoint_auth_method"] == "none"

    machine = _json(run("clients", "create", "--name", "Station", "--grant-type", "client_credentials",
                        "--scope", "admin", "--token-endpoint-auth-method", "client_secret_post"))
    assert machine["grant_types"] == ["client_credentials"]


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "x", "--redirect-uri", "http://evil.example/cb"],
        ["--name", "x", "--redirect-uri", "https://rp.example/cb#frag"],
        ["--name", "x"],
        ["--name", "x", "--redirect-uri", "https://rp.example/cb", "--grant-type", "password"],
        ["--name", "x", "--public", "--grant-type", "client_credentials"],
        ["--name", "x", "--redirect-uri", "https://rp.example/cb", "--scope", "openid everything"],
    ],
)
def test_clients_create_rejects_bad_registrations(run, args):
    result = run("clients", "create", *args)
    assert result.exit_code == 1 and result.stdout == ""
    assert json.loads(result.stderr)["error"] == "invalid_request"


def test_keys_rotate_keeps_old_public_keys_published(run, tmp_path):
    _json(run("init"))
    rotated = _json(run("keys", "rotate"))
    assert len(rotated["keys_created"]) == 2
    from idp import create_app
    from idp.settings import load_settings

    app = create_app(load_settings(environ={"IDP_INSTANCE_DIR": str(tmp_path / "instance")}))
    with app.app_context():
        jwks = json.loads(app.extensions["idp"].keys.ring().jwks_bytes)
    kids = {key["kid"] for key in jwks["keys"]}
    assert len(kids) == 4 and set(rotated["keys_created"]) <= kids
    assert all("d" not in key for key in jwks["keys"])


def test_postgres_commands_require_init_and_init_migrates(run, redis_url):
    with fresh_pg_database(f"idp_cli_{RUN_ID}") as url:
        before = run("users", "create", "--email", "a@example.com", "--password", "a long passphrase here",
                     IDP_DATABASE_URL=url)
        assert before.exit_code == 2 and "idp init" in before.stderr
        assert _json(run("init", IDP_DATABASE_URL=url))["migrated_to"] == HEAD_REVISION
        created = _json(run("users", "create", "--email", "a@example.com", "--password", "a long passphrase here",
                            IDP_DATABASE_URL=url))
        assert created["email"] == "a@example.com"


def test_invalid_configuration_is_a_clear_error(run):
    result = run("init", IDP_ISSUER="http://idp.example.com")
    assert result.exit_code == 2
    assert "https" in json.loads(result.stderr)["error_description"]


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain listener", "another idp serve"])
def test_serve_refuses_a_port_another_process_listens_on(run, reuse_port):
    """Workers listen with SO_REUSEPORT, which another process setting it too could share silently."""
    with listener(reuse_port) as port:
        result = run("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.exit_code == 2
    error = json.loads(result.stderr)
    assert error["error"] == "address_in_use" and f"127.0.0.1:{port}" in error["error_description"]
