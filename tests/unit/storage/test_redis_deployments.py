"""IDP_REDIS_URL beyond one server: a Sentinel-managed master followed through a failover, a
Cluster whose keys spread over slots, and URLs that cannot work refused with a clear message."""

from __future__ import annotations

import secrets
import time

import pytest
from redis.cluster import key_slot

from idp.storage.store import RedisStore, StoreUnavailable, redis_client
from tests.conftest import RUN_ID
from tests.redis_topologies import free_port


def _prefix() -> str:
    return f"idp-test-{RUN_ID}-{secrets.token_hex(4)}:"


def _eventually(fn, timeout: float = 15.0):
    """The first answer fn gives without StoreUnavailable: during a failover the store fails closed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_sentinel_store_follows_the_master_through_a_failover(redis_sentinel):
    prefix = _prefix()
    store = RedisStore(redis_sentinel.url, prefix)
    store.set("before", "kept", 300)
    old_master = redis_sentinel.master_port_now()
    # Written on the master before the switch, and known to have reached the replica.
    assert redis_sentinel.node(old_master).wait(1, 5000) == 1

    new_master = redis_sentinel.fail_over()
    assert new_master != old_master

    assert _eventually(lambda: store.get("before")) == "kept"
    _eventually(lambda: store.set("after", "written", 300))
    assert _eventually(lambda: store.incr("counter", 60)) == 1
    # The writes went to the new master, not to the old one (now its replica, which refuses writes).
    assert redis_sentinel.node(new_master).get(prefix + "after") == "written"
    assert redis_sentinel.node(new_master).info("replication")["role"] == "master"


def test_cluster_store_reads_writes_and_deletes_keys_of_many_slots_at_once(redis_cluster):
    prefix = _prefix()
    store = RedisStore(redis_cluster.url, prefix)
    keys = [f"k{n}" for n in range(24)]
    assert len({key_slot((prefix + k).encode()) for k in keys}) > 1  # the keys really are spread out
    store.set_many({k: f"v{n}" for n, k in enumerate(keys)}, 60)
    assert store.get_many(*keys, "missing") == [f"v{n}" for n in range(24)] + [None]
    store.delete(*keys)
    assert store.get_many(*keys) == [None] * 24
    assert store.incr("counter", 60) == 1 and store.incr("counter", 60) == 2
    assert store.add("once", "1", 60) is True and store.add("once", "2", 60) is False
    assert store.take("once") == "1" and store.take("once") is None
    assert store.ping() is True


@pytest.mark.parametrize("url", [
    lambda: f"redis+sentinel://127.0.0.1:{free_port()}/idp-test",
    lambda: f"redis+cluster://127.0.0.1:{free_port()}",
], ids=["sentinel", "cluster"])
def test_unreachable_sentinel_or_cluster_fails_closed(url):
    store = RedisStore(url(), _prefix())  # nothing connects yet: a process starts without Redis
    for call in (lambda: store.get("k"), lambda: store.set("k", "v", 10), lambda: store.get_many("a", "b"),
                 lambda: store.incr("k", 10), lambda: store.delete("a", "b"),
                 lambda: store.set_and_get("k", "v", 10, "other")):
        with pytest.raises(StoreUnavailable):
            call()
    assert store.ping() is False


@pytest.mark.parametrize("url, message", [
    ("memcached://127.0.0.1:11211", "must start with one of"),
    ("http://127.0.0.1:6379", "must start with one of"),
    ("redis+sentinel://127.0.0.1:26379", "service"),
    ("redis+sentinel://127.0.0.1:26379/svc/notadb", "service"),
    ("redis+cluster://", "names no host"),
    ("redis+cluster://127.0.0.1:port", "is not host:port"),
])
def test_urls_that_cannot_work_are_refused_with_a_clear_message(url, message):
    with pytest.raises(ValueError, match=message):
        redis_client(url)


def test_sentinel_url_parts_reach_the_client():
    client, cluster = redis_client("rediss+sentinel://app:s%40cret@10.0.0.1:26380,[::1]/idp-main/3"
                                   "?sentinel_password=watch")
    assert cluster is False
    pool = client.connection_pool
    assert pool.service_name == "idp-main"
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["username"] == "app" and pool.connection_kwargs["password"] == "s@cret"
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sentinels] == [("10.0.0.1", 26380), ("::1", 26379)]
    assert all(s.connection_pool.connection_kwargs["password"] == "watch" for s in sentinels)
    assert "SSL" in pool.connection_class.__name__
