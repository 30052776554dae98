"""gunicorn, started from `idp serve` with the app already built."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, app, options: dict):
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self):
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._app


def _start_outbox_worker(worker):
    """Each gunicorn worker drains the outbox too: deliveries need no separate process."""
    from idp.notify.delivery import BackgroundWorker

    app = worker.wsgi
    app.extensions["idp_outbox_worker"] = BackgroundWorker(app, housekeeping=housekeeping_tasks(app)).start()


def housekeeping_tasks(app) -> list:
    return [app.extensions["idp"].sessions.end_expired]


def run_gunicorn(app, host: str, port: int, workers: int, threads: int) -> None:
    # Forked workers must not share the parent's database connections.
    from idp.extensions import db

    with app.app_context():
        db.engine.dispose()

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "accesslog": "-",
        "errorlog": "-",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "forwarded_allow_ips": "*" if app.extensions["idp"].settings.proxy_hops else "127.0.0.1",
        "post_worker_init": _start_outbox_worker,
    }
    _Gunicorn(app, options).run()
