"""idp: an OpenID Connect identity provider."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from idp.settings import PROJECT_ROOT, Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
        instance_path=str(settings.instance_dir),
    )
    _configure(app, settings)
    _init_extensions(app, settings)
    _register_rooms(app, settings)
    return app


def _configure(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.database_url),
        SESSION_COOKIE_NAME="__Host-idp_ui" if settings.is_https else "idp_ui",
        SESSION_COOKIE_SECURE=settings.is_https,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=settings.login_flow_ttl,
        WTF_CSRF_TIME_LIMIT=settings.login_flow_ttl,
        # Referrer-Policy: no-referrer means browsers send no Referer to check; the per-session token
        # and SameSite=Lax cookies carry the CSRF defence.
        WTF_CSRF_SSL_STRICT=False,
        MAX_CONTENT_LENGTH=256 * 1024,
        MAX_FORM_MEMORY_SIZE=256 * 1024,
        JSON_SORT_KEYS=False,
    )
    from idp.web.cookies import SignedCookieSessions

    app.session_interface = SignedCookieSessions()
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 15}}
    # Liveness is checked by _ping_idle_connections, not pool_pre_ping: a ping on every checkout is
    # a round trip more per transaction (a third of UserInfo's database time).
    return {"pool_size": 5, "max_overflow": 5}


def _init_extensions(app: Flask, settings: Settings) -> None:
    from idp.extensions import csrf, db
    from idp.services import Services
    from idp.storage.store import create_store

    db.init_app(app)
    csrf.init_app(app)
    app.extensions["idp"] = Services.build(settings, create_store(settings.redis_url, settings.redis_prefix))
    from idp.services.profiles import track_user_changes

    track_user_changes(db.session)
    if settings.uses_embedded_database:
        _sqlite_pragmas(app)
    else:
        _ping_idle_connections(app)


def _sqlite_pragmas(app: Flask) -> None:
    from sqlalchemy import event

    from idp.extensions import db

    with app.app_context():

        @event.listens_for(db.engine, "connect")
        def on_connect(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()


# A pooled connection unused for longer than this is pinged before it is handed out.
IDLE_PING_SECONDS = 10.0


def _ping_idle_connections(app: Flask) -> None:
    """A connection that sat idle may have been closed by the server, a restart or a proxy's idle
    timeout: ping those before use, and let the pool replace one that fails (a DisconnectionError
    from a checkout makes it retry with a fresh connection). A connection in steady use is not
    pinged; if the database restarts under load, the request that meets the dead connection gets a
    503 and the pool drops every connection opened before it."""
    import time

    from sqlalchemy import event, exc

    from idp.extensions import db

    with app.app_context():
        engine = db.engine

    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection, record, _proxy):
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(f"idle connection failed its ping: {error}") from error


def _register_rooms(app: Flask, settings: Settings) -> None:
    from idp import account, admin, api, login
    from idp.oidc import logout, metadata, views  # noqa: F401  (routes)
    from idp.oidc.backchannel import init_backchannel
    from idp.services.audit import record_session_end, record_sessions_end
    from idp.services.grants import end_access_tokens_of_session, end_access_tokens_of_sessions
    from idp.services.sessions import session_ending, sessions_ending
    from idp.oidc.blueprint import bp as oidc_bp
    from idp.oidc.token_endpoints import TokenEndpoints
    from idp.web import errors, headers

    app.wsgi_app = TokenEndpoints(app.wsgi_app, app, app.extensions["idp"])
    metadata.init_metadata(app, settings)
    init_backchannel(app)
    session_ending.connect(record_session_end)
    sessions_ending.connect(record_sessions_end)
    session_ending.connect(end_access_tokens_of_session)
    sessions_ending.connect(end_access_tokens_of_sessions)
    app.register_blueprint(oidc_bp)
    app.register_blueprint(login.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(api.bp)
    errors.init_app(app)
    headers.init_app(app, settings)
    app.context_processor(lambda: {"product_name": settings.product_name,
                                   "signup_enabled": settings.signup_enabled})
