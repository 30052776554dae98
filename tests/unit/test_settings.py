"""Settings from IDP_* variables (and config/idp.toml), checked at start-up rather than at first use."""

from __future__ import annotations

import stat

import pytest

from idp.settings import Settings, SettingsError, load_settings


@pytest.fixture
def env(tmp_path):
    """A minimal environment that reads no config file and keeps secrets in a throwaway folder."""
    return {"IDP_CONFIG_FILE": str(tmp_path / "absent.toml"), "IDP_INSTANCE_DIR": str(tmp_path / "instance")}


def test_defaults(env, tmp_path):
    s = load_settings(environ=env)
    instance = (tmp_path / "instance").resolve()
    assert s.issuer == "http://localhost:5000"
    assert s.instance_dir == instance
    assert s.database_url == f"sqlite:///{instance / 'idp.sqlite3'}"
    assert s.uses_embedded_database is True
    assert s.redis_url is None
    assert s.mail_url == f"file://{instance / 'mail'}"
    assert s.mail_from == "idp@localhost"
    assert s.signup_enabled is False
    assert s.is_https is False and s.rp_id == "localhost"


def test_reads_idp_variables(env):
    s = load_settings(environ={
        **env,
        "IDP_ISSUER": "https://login.example.com",
        "IDP_DATABASE_URL": "postgresql+psycopg://idp@db.internal/idp",
        "IDP_REDIS_URL": "redis://cache.internal:6379/2",
        "IDP_REDIS_PREFIX": "tenant-a:",
        "IDP_SECRET_KEY": "s" * 40,
        "IDP_MAIL_URL": "smtp://mail.internal:587?starttls=1",
        "IDP_MAIL_FROM": "login@example.com",
        "IDP_SMS_WEBHOOK_URL": "https://sms.example.com/send",
        "IDP_SIGNUP_ENABLED": "1",
        "IDP_PRODUCT_NAME": "Alarm Cloud",
        "IDP_PASSWORD_FAILURES_PER_ACCOUNT": "5",
        "IDP_ACCESS_TOKEN_TTL": " 300 ",
        "IDP_PROXY_HOPS": "1",
        "HOME": "/ignored",
    })
    assert s.issuer == "https://login.example.com"
    assert s.is_https is True and s.rp_id == "login.example.com"
    assert s.database_url == "postgresql+psycopg://idp@db.internal/idp"
    assert s.uses_embedded_database is False
    assert s.redis_url == "redis://cache.internal:6379/2"
    assert s.redis_prefix == "tenant-a:"
    assert s.secret_key == "s" * 40
    assert s.mail_url == "smtp://mail.internal:587?starttls=1"
    assert s.mail_from == "login@example.com"
    assert s.sms_webhook_url == "https://sms.example.com/send"
    assert s.signup_enabled is True
    assert s.product_name == "Alarm Cloud"
    assert s.password_failures_per_account == 5
    assert s.access_token_ttl == 300
    assert s.proxy_hops == 1


@pytest.mark.parametrize("raw, expected", [("1", True), ("true", True), ("yes", True), ("on", True),
                                           ("0", False), ("false", False), ("no", False), ("off", False)])
def test_signup_flag(env, raw, expected):
    assert load_settings(environ={**env, "IDP_SIGNUP_ENABLED": raw}).signup_enabled is expected


def test_empty_variables_mean_the_default(env):
    s = load_settings(environ={**env, "IDP_REDIS_URL": "", "IDP_ISSUER": "", "IDP_ACCESS_TOKEN_TTL": ""})
    assert s.redis_url is None
    assert s.issuer == "http://localhost:5000"
    assert s.access_token_ttl == Settings.access_token_ttl


def test_config_file_is_read_and_environment_wins(env, tmp_path):
    config = tmp_path / "idp.toml"
    config.write_text('IDP_ISSUER = "https://from-file.example"\nIDP_MAIL_FROM = "file@example.com"\n'
                      'IDP_PROXY_HOPS = 2\nIDP_SIGNUP_ENABLED = true\n')
    s = load_settings(environ={**env, "IDP_CONFIG_FILE": str(config), "IDP_MAIL_FROM": "env@example.com"})
    assert s.issuer == "https://from-file.example"
    assert s.mail_from == "env@example.com"
    assert s.proxy_hops == 2
    assert s.signup_enabled is True


def test_explicit_overrides_win_over_environment(env):
    s = load_settings(environ={**env, "IDP_MAIL_FROM": "env@example.com"}, mail_from="override@example.com")
    assert s.mail_from == "override@example.com"


@pytest.mark.parametrize(
    "issuer, expected",
    [
        ("https://idp.example/", "https://idp.example"),
        ("https://idp.example/tenant/", "https://idp.example/tenant"),
        ("http://localhost:5000/", "http://localhost:5000"),
    ],
)
def test_trailing_slash_is_stripped_from_the_issuer(env, issuer, expected):
    # OIDC Discovery §4.3: the issuer must match byte for byte, so one spelling only.
    assert load_settings(environ={**env, "IDP_ISSUER": issuer}).issuer == expected


@pytest.mark.parametrize("issuer", ["http://localhost:5000", "http://127.0.0.1:8000", "http://[::1]:5000",
                                    "https://idp.example", "https://idp.example:8443/base"])
def test_accepted_issuers(env, issuer):
    assert load_settings(environ={**env, "IDP_ISSUER": issuer}).issuer == issuer


@pytest.mark.parametrize(
    "issuer",
    [
        "http://idp.example",  # plain http off the loopback interface
        "http://localhost.evil.example",
        "http://10.0.0.5:5000",
        "ftp://idp.example",
        "idp.example",
        "https://",
        "https://idp.example?tenant=a",
        "https://idp.example#top",
        "https://idp.example?",
        "https://idp.example/#",
        "https://admin:secret@idp.example",
        "https://admin@idp.example",
    ],
)
def test_rejected_issuers(env, issuer):
    with pytest.raises(SettingsError, match="IDP_ISSUER"):
        load_settings(environ={**env, "IDP_ISSUER": issuer})


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380",
                                 "redis+sentinel://s1:26379,s2:26379/idp-main/1", "redis+cluster://n1:7000,n2:7001"])
def test_accepted_redis_urls(env, url):
    assert load_settings(environ={**env, "IDP_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("url", ["memcached://127.0.0.1:11211", "127.0.0.1:6379", "redis+sentinel://s1:26379",
                                 "redis+cluster://"])
def test_rejected_redis_urls(env, url):
    with pytest.raises(SettingsError, match="IDP_REDIS_URL"):
        load_settings(environ={**env, "IDP_REDIS_URL": url})


@pytest.mark.parametrize("name", ["IDP_ACCESS_TOKEN_TTL", "IDP_PASSWORD_FAILURES_PER_ACCOUNT", "IDP_PROXY_HOPS"])
@pytest.mark.parametrize("raw", ["ten", "1.5", "10s", "0x10"])
def test_non_numeric_integer_setting_is_refused(env, name, raw):
    with pytest.raises(SettingsError, match=name[4:].lower()):
        load_settings(environ={**env, name: raw})


@pytest.mark.parametrize("name", ["IDP_ACCESS_TOKEN_TTL", "IDP_LOGIN_FLOW_TTL", "IDP_PASSWORD_FAILURES_PER_ACCOUNT",
                                  "IDP_PASSWORD_FAILURE_WINDOW", "IDP_ARGON2_TIME_COST"])
@pytest.mark.parametrize("raw", ["0", "-5"])
def test_lifetimes_and_limits_must_be_positive(env, name, raw):
    # A zero lifetime or limit cannot work (the store refuses a zero TTL at the first sign-in);
    # say so at start-up instead.
    with pytest.raises(SettingsError, match=name[4:].lower()):
        load_settings(environ={**env, name: raw})


def test_no_proxy_is_a_valid_proxy_count(env):
    assert load_settings(environ={**env, "IDP_PROXY_HOPS": "0"}).proxy_hops == 0
    with pytest.raises(SettingsError, match="proxy_hops"):
        load_settings(environ={**env, "IDP_PROXY_HOPS": "-1"})


@pytest.mark.parametrize("line", ["IDP_ACCESS_TOKEN_TTL = 1.5", "IDP_ACCESS_TOKEN_TTL = true",
                                  'IDP_ACCESS_TOKEN_TTL = "soon"'])
def test_config_file_numbers_must_be_whole(env, tmp_path, line):
    config = tmp_path / "idp.toml"
    config.write_text(line + "\n")
    with pytest.raises(SettingsError, match="access_token_ttl must be a whole number"):
        load_settings(environ={**env, "IDP_CONFIG_FILE": str(config)})


def test_unknown_signing_alg_is_refused(env):
    with pytest.raises(SettingsError, match="default_signing_alg"):
        load_settings(environ={**env, "IDP_DEFAULT_SIGNING_ALG": "HS256"})


def test_secret_key_is_generated_once_and_kept(env, tmp_path):
    first = load_settings(environ=env)
    path = tmp_path / "instance" / "secret_key"
    assert path.is_file()
    assert len(first.secret_key) >= 43  # 256 bits or more, URL-safe base64
    assert path.read_text().strip() == first.secret_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_settings(environ=env).secret_key == first.secret_key


def test_each_instance_folder_gets_its_own_secret(tmp_path):
    a = load_settings(environ={"IDP_CONFIG_FILE": "/nonexistent", "IDP_INSTANCE_DIR": str(tmp_path / "a")})
    b = load_settings(environ={"IDP_CONFIG_FILE": "/nonexistent", "IDP_INSTANCE_DIR": str(tmp_path / "b")})
    assert a.secret_key != b.secret_key


def test_configured_secret_key_wins_and_writes_nothing(env, tmp_path):
    s = load_settings(environ={**env, "IDP_SECRET_KEY": "configured-secret-value"})
    assert s.secret_key == "configured-secret-value"
    assert not (tmp_path / "instance" / "secret_key").exists()
