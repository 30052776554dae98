"""gunicorn hooks: each worker process runs an outbox worker and stops it on the way out."""

from types import SimpleNamespace

from idp.server import _stop_outbox_worker


class FakeOutboxWorker:
    stopped = False

    def stop(self):
        self.stopped = True


def test_worker_exit_stops_the_outbox_worker_so_a_delivery_in_flight_is_recorded():
    outbox = FakeOutboxWorker()
    _stop_outbox_worker(None, SimpleNamespace(wsgi=SimpleNamespace(extensions={"idp_outbox_worker": outbox})))
    assert outbox.stopped


def test_worker_exit_without_an_outbox_worker_does_nothing():
    _stop_outbox_worker(None, SimpleNamespace())  # the master reaping a worker: no app loaded there
    _stop_outbox_worker(None, SimpleNamespace(wsgi=SimpleNamespace(extensions={})))


def test_instances_on_one_host_do_not_share_gunicorns_control_socket():
    from idp.server import _Gunicorn

    server = _Gunicorn(object(), {"bind": "127.0.0.1:0"})
    if "control_socket_disable" in server.cfg.settings:  # gunicorn >= 25.1
        assert server.cfg.control_socket_disable is True
