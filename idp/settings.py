"""Typed settings from the environment (and an optional file under config/).

Every lifetime and threshold lives here, each with the reason for its default.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message says which and why."""


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    issuer: str = "http://localhost:5000"
    instance_dir: Path = field(default_factory=lambda: Path("instance").resolve())
    database_url: str = ""
    redis_url: str | None = None
    # Lets several deployments (or test runs) share one Redis without seeing each other's keys.
    redis_prefix: str = "idp:"
    secret_key: str = ""
    mail_url: str = ""
    mail_from: str = "idp@localhost"
    sms_webhook_url: str | None = None
    signup_enabled: bool = False
    product_name: str = "idp"
    # Number of reverse proxies in front (X-Forwarded-For hops to trust for the client IP).
    proxy_hops: int = 0

    # RFC 6749 §4.1.2 recommends at most 10 minutes; a browser round-trip needs seconds.
    authorization_code_ttl: int = 60
    # Short-lived access tokens bound revocation lag for resource servers that verify offline.
    access_token_ttl: int = 600
    id_token_ttl: int = 3600
    # RFC 9700 §4.14.2: refresh tokens expire after inactivity and have an absolute limit (ASVS 10.4.8).
    refresh_token_idle_ttl: int = 14 * 24 * 3600
    refresh_token_absolute_ttl: int = 90 * 24 * 3600
    # A session lives while its browser or app uses it (refreshes count) and ends after this much
    # idleness, or at the absolute limit, whichever comes first.
    session_idle_ttl: int = 14 * 24 * 3600
    session_absolute_ttl: int = 90 * 24 * 3600
    # NIST SP 800-63B §4.2.3 (AAL2): a sign-in older than 12 hours no longer satisfies a new
    # authorization request; the person signs in again (the session and its apps stay).
    sso_max_age: int = 12 * 3600
    # Writing last-active on every request would turn each page view into a database write.
    session_touch_interval: int = 60
    # A half-finished sign-in or authorization request is kept this long.
    login_flow_ttl: int = 15 * 60
    # Password throttling: NIST SP 800-63B §5.2.2 caps consecutive failures at 100; we slow far earlier.
    password_failures_per_account: int = 10
    password_failure_window: int = 15 * 60
    # Generous per-IP limit so an office behind one NAT address is not locked out together.
    password_failures_per_ip: int = 100
    # Second-factor attempt limits (SPEC §6.3).
    code_failures_per_ip: int = 3
    code_ip_block_seconds: int = 10 * 60
    code_failures_per_account: int = 4
    otp_code_ttl: int = 60
    otp_resend_cooldown: int = 30
    trusted_device_ttl: int = 30 * 24 * 3600
    # An invitation's set-password link works this long (and once).
    invitation_ttl: int = 7 * 24 * 3600
    reauth_max_age: int = 5 * 60
    # Password policy (SPEC §6.10; NIST SP 800-63B §5.1.1.2 asks for at least 8, 15 when the password
    # is the only factor; 12 is the product's floor with a strength estimator on top).
    password_min_length: int = 12
    # Composition rules: NIST SP 800-63B says SHOULD NOT (rev 3) / SHALL NOT (rev 4) impose them, so all
    # are off; a deployment bound by an older policy can turn them on.
    password_require_lower: bool = False
    password_require_upper: bool = False
    password_require_digit: bool = False
    password_require_symbol: bool = False
    # Password reset (/reset): how many reset requests per account and per IP in a window. The per-IP
    # limit is generous for an office behind one NAT address; the per-account one stops mail bombing.
    password_reset_per_account: int = 5
    password_reset_per_ip: int = 50
    password_reset_window: int = 60 * 60
    # The first reset step answers no sooner than this, whether or not the account exists and a code was
    # sent, so response time does not reveal which addresses have accounts (ASVS 6.3.8 / D08).
    password_reset_min_response_ms: int = 500
    # argon2id: RFC 9106 §4's second recommended option (t=3, p=4, m=64 MiB), the one it gives for
    # servers that cannot spare its first option's 2 GiB per hash, and Authelia's default. It is
    # about 3 × the memory and 7 × the work of OWASP's minimum (m=19 MiB, t=2, p=1): about 0.1 s
    # per sign-in on two cores, where a person does not notice it and every guess at a stolen hash
    # costs as much. Hashes made with other parameters are rehashed at the next sign-in.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 64 * 1024
    argon2_parallelism: int = 4
    # Password hashes running at once per process; more wait their turn. Each holds argon2_memory_kib
    # while it runs and shares the CPUs with the others (idp/crypto/argon2_memory.py), so more at once
    # adds memory, not speed (eight threads of one worker would hold 512 MiB with the defaults).
    password_hashes_at_once: int = 2
    default_signing_alg: str = "ES256"
    # `idp purge` and the worker's periodic purge (idp/services/purge.py). Codes and tokens go this
    # long after they expired: a replayed code or rotated refresh token inside the window still finds
    # its row and revokes its grant (RFC 6749 §4.1.2, RFC 9700 §4.14.2), and instances whose clocks
    # differ by seconds never disagree about a row that is already gone.
    purge_token_grace: int = 3600
    # Nothing shows ended sessions to people, but the audit trail names sessions by id; the row (device,
    # IP, user agent, why it ended) is what an investigation of a recent incident looks up.
    ended_session_retention: int = 30 * 24 * 3600
    # Delivered or finally failed back-channel logouts stay on /admin/logout-deliveries this long.
    logout_outbox_retention: int = 7 * 24 * 3600
    # The outbox worker (`idp worker`, and each `idp serve` worker) purges once per interval, one
    # process per interval across the deployment; 0 turns it off for those who run `idp purge` from cron.
    # Without either, expired tokens pile up by the million on a busy deployment.
    purge_interval: int = 3600
    # The worker's purge runs in slices of this many seconds between outbox passes, so back-channel
    # deliveries wait at most this long behind it.
    purge_slice_seconds: int = 1
    # Old public keys stay in JWKS until every token signed with them has expired.
    retired_key_grace: int = 24 * 3600

    @property
    def is_https(self) -> bool:
        return self.issuer.startswith("https://")

    @property
    def rp_id(self) -> str:
        return urlsplit(self.issuer).hostname or "localhost"

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)


_ENV_KEYS = {
    "IDP_ISSUER": "issuer",
    "IDP_DATABASE_URL": "database_url",
    "IDP_REDIS_URL": "redis_url",
    "IDP_REDIS_PREFIX": "redis_prefix",
    "IDP_SECRET_KEY": "secret_key",
    "IDP_INSTANCE_DIR": "instance_dir",
    "IDP_MAIL_URL": "mail_url",
    "IDP_MAIL_FROM": "mail_from",
    "IDP_SMS_WEBHOOK_URL": "sms_webhook_url",
    "IDP_SIGNUP_ENABLED": "signup_enabled",
    "IDP_PRODUCT_NAME": "product_name",
}
_INT_FIELDS = {f.name for f in dataclasses.fields(Settings) if f.type in ("int", int)}
# Zero means "none" for these; for every other number zero cannot work (a zero TTL is refused by the
# store, a zero limit locks everyone out), so it is refused at start-up rather than at the first sign-in.
_MAY_BE_ZERO = {"proxy_hops", "session_touch_interval", "password_reset_min_response_ms", "purge_interval",
                "purge_token_grace"}
_BOOL_FIELDS = {f.name for f in dataclasses.fields(Settings) if f.type in ("bool", bool)}


def _coerce(name: str, raw) -> object:
    if name == "instance_dir":
        return Path(str(raw)).expanduser().resolve()
    if name in _BOOL_FIELDS:
        return raw if isinstance(raw, bool) else _bool(str(raw))
    if name in _INT_FIELDS:
        # int() would quietly turn a TOML 1.5 into 1 and true into 1.
        if isinstance(raw, (bool, float)):
            raise SettingsError(f"{name} must be a whole number, got {raw!r}")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
        lowest = 0 if name in _MAY_BE_ZERO else 1
        if value < lowest:
            raise SettingsError(f"{name} must be at least {lowest}, got {value}")
        return value
    return str(raw) if raw is not None else None


def _read_config_file(environ) -> dict:
    path = environ.get("IDP_CONFIG_FILE") or str(PROJECT_ROOT / "config" / "idp.toml")
    p = Path(path)
    if not p.is_file():
        return {}
    with p.open("rb") as fh:
        data = tomllib.load(fh)
    return {k.upper(): v for k, v in data.items()}


def load_settings(environ=None, **overrides) -> Settings:
    """Settings from config/idp.toml, then the environment, then explicit overrides."""
    environ = os.environ if environ is None else environ
    values: dict = {}
    file_values = _read_config_file(environ)
    known = {f.name for f in dataclasses.fields(Settings)}
    for source in (file_values, environ):
        for key, raw in source.items():
            if key in _ENV_KEYS:
                values[_ENV_KEYS[key]] = raw
            elif key.startswith("IDP_") and key[4:].lower() in known:
                values[key[4:].lower()] = raw
    values.update(overrides)
    values = {k: _coerce(k, v) for k, v in values.items() if v not in ("", None) or k == "redis_url"}
    settings = Settings(**values)
    return _complete(settings)


def _complete(settings: Settings) -> Settings:
    """Fill the defaults that depend on the instance folder, and check what is set."""
    issuer = settings.issuer.rstrip("/")
    parts = urlsplit(issuer)
    # OIDC Discovery §3: the issuer has no query or fragment; an empty "?" or "#", or user:password@,
    # would end up inside every endpoint URL built from it.
    if (parts.scheme not in ("http", "https") or not parts.hostname or "?" in issuer or "#" in issuer
            or parts.username is not None or parts.password is not None):
        raise SettingsError(
            f"IDP_ISSUER must be an http(s) URL without credentials, query or fragment, got {issuer!r}"
        )
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise SettingsError("IDP_ISSUER must use https unless it is a loopback address")
    instance = settings.instance_dir
    database_url = settings.database_url or f"sqlite:///{instance / 'idp.sqlite3'}"
    mail_url = settings.mail_url or f"file://{instance / 'mail'}"
    secret_key = settings.secret_key or _instance_secret(instance)
    if settings.default_signing_alg not in ("ES256", "RS256"):
        raise SettingsError("default_signing_alg must be ES256 or RS256")
    if settings.redis_url:
        from idp.storage.store import redis_client

        try:
            redis_client(settings.redis_url)  # parses only: nothing connects before the first command
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    return settings.replace(
        issuer=issuer,
        database_url=database_url,
        mail_url=mail_url,
        secret_key=secret_key,
        redis_url=settings.redis_url or None,
    )


def _instance_secret(instance: Path) -> str:
    """A secret generated once and kept in the instance folder, so restarts keep cookies valid."""
    instance.mkdir(parents=True, exist_ok=True)
    path = instance / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value
