"""The `idp` command. Every command that creates something prints one JSON object on stdout."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys

import click

from idp.domain.errors import DomainError
from idp.settings import Settings, SettingsError, load_settings


def _emit(obj: dict) -> None:
    click.echo(json.dumps(obj, default=str))


def _fail(error: str, description: str, code: int = 1):
    click.echo(json.dumps({"error": error, "error_description": description}), err=True)
    sys.exit(code)


def _make_app():
    from idp import create_app

    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail("invalid_configuration", str(exc), 2)
    return create_app(settings)


# The revision `idp init` migrates to: the newest file in migrations/versions (a test holds the two
# together). Serving commands compare the database with it in one query, without alembic.
SCHEMA_REVISION = "0006"


def _with_migrations(app):
    """Flask-Migrate set up on the app, only for the commands that migrate: alembic and what it
    imports held about 11 MiB in every serving worker, which forks from the process that built
    the app."""
    if "migrate" not in app.extensions:
        from flask_migrate import Migrate

        from idp.extensions import db
        from idp.settings import PROJECT_ROOT

        Migrate(app, db, directory=str(PROJECT_ROOT / "migrations"), render_as_batch=True)
    return app


def initialise(app) -> dict:
    """Migrate to the newest revision and make sure signing keys exist; safe to repeat."""
    from flask_migrate import upgrade

    from idp.extensions import db

    with _with_migrations(app).app_context():
        upgrade()
        created = app.extensions["idp"].keys.ensure_keys()
        revision = db.session.execute(db.text("SELECT version_num FROM alembic_version")).scalar()
        db.session.remove()
    return {"migrated_to": revision, "keys_created": created}


def _schema_revisions(app) -> set[str]:
    """The revisions the database says it is at; none when it was never migrated."""
    from sqlalchemy import exc, text

    from idp.extensions import db

    with app.app_context():
        try:
            with db.engine.connect() as conn:
                return set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
        except exc.ProgrammingError:  # no alembic_version table: an empty database
            return set()
        except exc.OperationalError as error:
            _fail("database_unavailable", f"Cannot reach the database: {error.orig}".strip(), 2)


def _ready_app():
    """An app whose database is current: the embedded default migrates itself, others need `idp init`."""
    app = _make_app()
    settings = app.extensions["idp"].settings
    if settings.uses_embedded_database:
        initialise(app)
        return app
    if _schema_revisions(app) != {SCHEMA_REVISION}:
        _fail("database_not_ready", "The database is not at the newest revision. Run `idp init` first.", 2)
    return app


@click.group()
def main():
    """idp: OpenID Connect identity provider."""


@main.command()
def init():
    """Migrate the database to the newest revision and create signing keys if none exist."""
    app = _make_app()
    _emit({"database": _safe_url(app.extensions["idp"].settings.database_url), **initialise(app)})


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
def serve(host, port, workers, threads):
    """Run the production server (gunicorn)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail("invalid_configuration", str(exc), 2)
    if workers > 1 and not settings.redis_url:
        _fail(
            "redis_required",
            "Several workers need a shared store: set IDP_REDIS_URL (redis://…) or run with --workers 1. "
            "The in-process store would let each worker keep its own login flows and attempt counters.",
            2,
        )
    if settings.issuer == Settings.issuer and port != 5000:
        # A newcomer trying another port still gets working URLs in discovery and redirects.
        os.environ["IDP_ISSUER"] = f"http://localhost:{port}"
    from idp.server import address_taken, release_large_blocks_to_the_os, run_gunicorn

    taken = address_taken(host, port)
    if taken:
        _fail("address_in_use", f"Cannot listen on {host}:{port}: {taken}. Another idp serve or another "
                                "program may be listening there.", 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    release_large_blocks_to_the_os()  # before the first password hash, which building the app makes
    app = _ready_app()
    if settings.uses_embedded_database:
        _first_start(app)
    run_gunicorn(app, host=host, port=port, workers=workers, threads=threads)


def _first_start(app) -> None:
    """A newcomer gets an administrator to sign in with; printed once, never again."""
    from sqlalchemy import func, select

    from idp.extensions import db
    from idp.storage.models import User

    with app.app_context():
        if db.session.scalar(select(func.count()).select_from(User)):
            return
        password = secrets.token_urlsafe(12)
        user = app.extensions["idp"].accounts.create_user("admin@localhost", password, "Administrator", is_admin=True)
        issuer = app.extensions["idp"].settings.issuer
        _emit({"first_start": True, "admin_email": user.email, "admin_password": password,
               "sign_in_url": f"{issuer}/login"})


@main.command()
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.05, 60))
def worker(interval):
    """Deliver queued back-channel logout tokens, with retries, until stopped."""
    import signal
    import threading

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = _ready_app()
    from idp.notify.delivery import BackgroundWorker

    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    from idp.server import housekeeping_tasks

    background = BackgroundWorker(app, interval, housekeeping=housekeeping_tasks(app)).start()
    stopped.wait()
    background.stop()


@main.command()
@click.option("--batch-size", default=5000, show_default=True, type=click.IntRange(1, 100_000),
              help="Rows per transaction; each batch commits on its own, so sign-ins never wait long.")
@click.option("--dry-run", is_flag=True, help="Count what would go, delete nothing.")
def purge(batch_size, dry_run):
    """Delete expired codes and tokens, dead grants, long-ended sessions and finished logouts."""
    from idp.services.purge import Purger

    app = _ready_app()
    with app.app_context():
        result = Purger(app.extensions["idp"].settings).run(batch_size=batch_size, dry_run=dry_run)
    _emit(result.as_dict())


@main.group()
def users():
    """Manage accounts."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--name")
@click.option("--phone", help="E.164, e.g. +14155550123")
@click.option("--admin", is_flag=True)
def users_create(email, password, name, phone, admin):
    app = _ready_app()
    with app.app_context():
        try:
            user = app.extensions["idp"].accounts.create_user(email, password, name, phone, is_admin=admin)
        except DomainError as exc:
            _fail(exc.code, exc.public)
        _emit({"id": user.id, "email": user.email, "name": user.name, "phone": user.phone,
               "is_admin": user.is_admin, "created_at": user.created_at.isoformat()})


@main.group()
def clients():
    """Manage relying apps."""


@clients.command("create")
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True)
@click.option("--public", is_flag=True, help="No secret; PKCE required (native and browser apps).")
@click.option("--backchannel-logout-uri")
@click.option("--grant-type", "grant_types", multiple=True)
@click.option("--scope")
@click.option("--first-party", is_flag=True, help="Skip the consent screen.")
@click.option("--token-endpoint-auth-method")
@click.option("--id-token-signing-alg", type=click.Choice(["ES256", "RS256"]))
def clients_create(name, redirect_uris, post_logout_redirect_uris, public, backchannel_logout_uri, grant_types,
                   scope, first_party, token_endpoint_auth_method, id_token_signing_alg):
    app = _ready_app()
    with app.app_context():
        try:
            client, secret = app.extensions["idp"].clients.create(
                name=name,
                redirect_uris=redirect_uris,
                post_logout_redirect_uris=post_logout_redirect_uris,
                public=public,
                backchannel_logout_uri=backchannel_logout_uri,
                grant_types=grant_types,
                scope=scope,
                first_party=first_party,
                token_endpoint_auth_method=token_endpoint_auth_method,
                id_token_signed_response_alg=id_token_signing_alg,
            )
        except DomainError as exc:
            _fail(exc.code, exc.public)
        _emit({
            "client_id": client.client_id,
            "client_secret": secret,
            "name": client.name,
            "public": client.is_public,
            "redirect_uris": client.redirect_uris,
            "post_logout_redirect_uris": client.post_logout_redirect_uris,
            "grant_types": client.grant_types,
            "scope": client.scope,
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "backchannel_logout_uri": client.backchannel_logout_uri,
            "first_party": client.first_party,
            "id_token_signed_response_alg": client.id_token_signed_response_alg,
        })


@main.group()
def keys():
    """Manage signing keys."""


@keys.command("rotate")
def keys_rotate():
    """Create new signing keys; old public keys stay in JWKS until tokens signed with them expire."""
    app = _ready_app()
    with app.app_context():
        created = app.extensions["idp"].keys.rotate()
    _emit({"keys_created": created})


if __name__ == "__main__":
    main()
