"""gunicorn, started from `idp serve` with the app already built."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import socket

from gunicorn.app.base import BaseApplication

from idp.web.access_log import AccessLog

# glibc's mallopt parameter number for the size above which malloc maps memory on its own.
_M_MMAP_THRESHOLD = -3


class _Gunicorn(BaseApplication):
    def __init__(self, app, options: dict):
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self):
        for key, value in self._options.items():
            self.cfg.set(key, value)
        # gunicorn >= 25.1 opens a control socket at one path per user: every instance on a host
        # would take it over from the others and unlink it when it stops. Nothing here uses it.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self):
        return self._app


def _start_outbox_worker(worker):
    """Each gunicorn worker drains the outbox too: deliveries need no separate process."""
    from idp.notify.delivery import BackgroundWorker

    app = worker.wsgi
    app.extensions["idp_outbox_worker"] = BackgroundWorker(app, housekeeping=housekeeping_tasks(app)).start()


# Within gunicorn's graceful_timeout (10 s), with time left for the outbox.
NOTICE_DRAIN_SECONDS = 5


def _on_worker_exit(_arbiter, worker):
    """On the way out, let a delivery in flight record its answer: a worker killed between the POST
    and the commit would leave the row to be sent again after its lease. Mail notices still queued
    get a few seconds to go out."""
    app = getattr(worker, "wsgi", None)  # unset in the master, which calls this hook too when it reaps a worker
    if app is None:
        return
    outbox = app.extensions.get("idp_outbox_worker")
    if outbox is not None:
        outbox.stop()
    svc = app.extensions.get("idp")
    if svc is not None and not svc.notifier.notices.drain(NOTICE_DRAIN_SECONDS):
        logging.getLogger("idp.notify").error("worker exit: mail notices still queued were not sent")


def housekeeping_tasks(app) -> list:
    from idp.services.purge import PeriodicPurge

    svc = app.extensions["idp"]
    return [svc.sessions.end_expired, PeriodicPurge(svc.settings, svc.store, logging.getLogger("idp.purge"))]


def run_gunicorn(app, host: str, port: int, workers: int, threads: int) -> None:
    # Forked workers must not share the parent's database connections.
    from idp.extensions import db

    _warm_up_before_fork(app)
    with app.app_context():
        db.engine.dispose()

    options = {
        **gunicorn_options(host, port, workers, threads),
        "forwarded_allow_ips": "*" if app.extensions["idp"].settings.proxy_hops else "127.0.0.1",
        "post_worker_init": _start_outbox_worker,
        "worker_exit": _on_worker_exit,
    }
    _Gunicorn(app, options).run()


def _warm_up_before_fork(app) -> None:
    """Work every worker would otherwise repeat in its first requests, done once in the master so the
    workers start with it (and share its pages until they write to them)."""
    # Otherwise the first unknown account a worker checks would take two hashes, not one.
    app.extensions["idp"].passwords.prepare_timing_equaliser()
    # Importing the signing keys validates them (35 ms for the RSA key here), and the keys each
    # worker reads then are the same: the imports are cached (idp/crypto/keys.py) and inherited.
    # The connection this opens is closed again before the fork (run_gunicorn).
    with app.app_context():
        app.extensions["idp"].keys.ring()
    from idp.services.user_agents import describe_user_agent

    # Compiles the User-Agent patterns the common browsers reach (about 0.3 s).
    describe_user_agent("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36")
    freeze_startup_objects()


def freeze_startup_objects() -> int:
    """Leave the objects built at start-up (modules, the app, its statements, about 156,000 of
    them) out of every later garbage collection: they live as long as the process. Each full
    collection in a worker walked them all again, about 25 µs per request averaged over a token
    endpoint's load, and touching them unshared the pages the workers inherit from the master.
    Returns how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def gunicorn_options(host: str, port: int, workers: int, threads: int) -> dict:
    """The server settings of `idp serve`; bench/reference_app.py runs its bare app with the same."""
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "accesslog": "-",
        "errorlog": "-",
        # gunicorn's line with the secret links and parameters redacted, and cheaper (idp/web/access_log.py).
        "logger_class": AccessLog,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "forwarded_allow_ips": "127.0.0.1",
        # A listening socket per worker (SO_REUSEPORT): the kernel spreads new connections over the
        # workers. On one shared socket the first worker to wake took them all, now and then: a
        # proxy's or load tester's 16 keep-alive connections on one worker, the other idle, half the
        # throughput.
        "reuse_port": True,
    }


def address_taken(host: str, port: int) -> str | None:
    """Why host:port cannot be listened on, or None if it can.

    The workers listen with SO_REUSEPORT, which lets any process of the same user that also sets it
    share the port without an error: a second `idp serve` (or one left over from a deploy) would
    silently take half the connections. A plain socket is refused by any listener there, so the
    master asks with one before starting."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc}"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed socket in TIME_WAIT is no owner
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def release_large_blocks_to_the_os(threshold: int = 1024 * 1024) -> bool:
    """Every password check allocates argon2's memory (argon2_memory_kib) in the thread serving it.
    glibc raises its mmap threshold after the first such block is freed, up to 32 MiB, so later blocks
    below that come from each thread's heap arena and stay in the process: with 19 MiB hashes, four
    threads kept about 80 MiB per worker after a few sign-ins (the 64 MiB default is above the cap).
    A fixed threshold keeps blocks this large in their own mappings, returned to the OS on free.
    Set before gunicorn forks, so every worker inherits it; a no-op where libc is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(_M_MMAP_THRESHOLD, threshold) == 1
