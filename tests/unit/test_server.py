"""gunicorn hooks: each worker process runs an outbox worker and stops it on the way out, after
giving its queued mail notices a few seconds."""

from types import SimpleNamespace

from idp.notify.mail import MailQueue
from idp.server import NOTICE_DRAIN_SECONDS, _on_worker_exit


class FakeOutboxWorker:
    stopped = False

    def stop(self):
        self.stopped = True


class RecordingMailer:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def _worker(**extensions):
    return SimpleNamespace(wsgi=SimpleNamespace(extensions=extensions))


def test_worker_exit_stops_the_outbox_worker_and_sends_the_queued_notices():
    outbox, mailer = FakeOutboxWorker(), RecordingMailer()
    notices = MailQueue(mailer)
    for n in range(3):
        notices.submit({"Subject": f"notice {n}", "To": "a@example.com"})
    _on_worker_exit(None, _worker(idp_outbox_worker=outbox, idp=SimpleNamespace(
        notifier=SimpleNamespace(notices=notices))))
    assert outbox.stopped
    assert [m["Subject"] for m in mailer.sent] == ["notice 0", "notice 1", "notice 2"]
    assert 0 < NOTICE_DRAIN_SECONDS < 10  # inside gunicorn's graceful_timeout


def test_worker_exit_without_an_outbox_worker_does_nothing():
    _on_worker_exit(None, SimpleNamespace())  # the master reaping a worker: no app loaded there
    _on_worker_exit(None, _worker())


def test_instances_on_one_host_do_not_share_gunicorns_control_socket():
    from idp.server import _Gunicorn

    server = _Gunicorn(object(), {"bind": "127.0.0.1:0"})
    if "control_socket_disable" in server.cfg.settings:  # gunicorn >= 25.1
        assert server.cfg.control_socket_disable is True


def test_each_worker_listens_on_a_socket_of_its_own():
    from idp.server import gunicorn_options

    assert gunicorn_options("127.0.0.1", 5000, 2, 4)["reuse_port"] is True


def test_address_taken_sees_plain_and_shared_listeners_but_not_a_free_port():
    from idp.server import address_taken
    from tests.receivers import listener

    for reuse_port in (False, True):
        with listener(reuse_port) as port:
            assert address_taken("127.0.0.1", port)
    assert address_taken("127.0.0.1", port) is None  # closed again


def test_objects_built_before_the_fork_are_left_out_of_later_collections():
    import gc

    from idp.server import freeze_startup_objects

    class Statement:
        pass

    built_at_start = Statement()
    assert gc.is_tracked(built_at_start)
    try:
        assert freeze_startup_objects() > 0
        assert gc.get_freeze_count() > 0
        assert not any(obj is built_at_start for obj in gc.get_objects())  # frozen objects are not tracked
    finally:
        gc.unfreeze()
    assert any(obj is built_at_start for obj in gc.get_objects())


def test_the_master_loads_the_signing_keys_once_for_every_worker(app, monkeypatch):
    import gc

    from idp.server import _warm_up_before_fork

    keys = app.extensions["idp"].keys
    keys.invalidate()
    monkeypatch.setattr("idp.server.freeze_startup_objects", lambda: 0)  # leave this test process's GC alone
    _warm_up_before_fork(app)
    assert keys.fresh_ring() is not None, "a worker forked now starts with the ring read and imported"
    assert gc.get_freeze_count() == 0


def test_workers_forked_from_one_key_ring_never_sign_with_the_same_nonce(app):
    """ES256 takes a fresh random nonce for every signature, and one nonce used twice with one key
    gives the key away. The workers inherit the master's imported keys; OpenSSL's generator must
    not come along unchanged into each of them."""
    import os

    with app.app_context():
        ring = app.extensions["idp"].keys.ring()
    claims = {"iss": "https://idp.example", "sub": "same claims in every worker", "iat": 1}
    signatures = []
    for _ in range(2):
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover (runs in the child)
            os.write(write_end, ring.sign(claims, "ES256").encode())
            os._exit(0)
        os.close(write_end)
        token = os.read(read_end, 4096).decode()
        os.close(read_end)
        os.waitpid(child, 0)
        assert ring.verify(token)[1] == claims
        signatures.append(token.rsplit(".", 1)[1])
    signatures.append(ring.sign(claims, "ES256").rsplit(".", 1)[1])
    assert len(set(signatures)) == 3
