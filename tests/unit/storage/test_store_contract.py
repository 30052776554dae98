"""One contract for both stores: the in-process dictionary and Redis must behave alike.

Time is moved by `advance`: a fake clock for MemoryStore; for Redis, the remaining lifetime of
the named keys is shortened by the same amount (what the passage of time would do), so the
suite needs no long sleeps. One test waits for a real 1-second expiry on Redis.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest
import redis as redis_lib

from idp.domain.errors import ServiceUnavailable
from idp.storage.store import MemoryStore, RedisStore, StoreUnavailable, create_store, redis_client
from tests.conftest import RUN_ID


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class MemoryHarness:
    kind = "memory"

    def __init__(self):
        self.clock = FakeClock()
        self.store = MemoryStore(clock=self.clock)

    def advance(self, seconds: float, *keys: str) -> None:
        self.clock.now += seconds


class RedisHarness:
    kind = "redis"

    def __init__(self, url: str):
        self.prefix = f"idp-test-{RUN_ID}-store-{secrets.token_hex(4)}:"
        self.store = RedisStore(url, prefix=self.prefix)
        self.raw, _ = redis_client(url)  # the same kind of client on the same server(s), unprefixed

    def advance(self, seconds: float, *keys: str) -> None:
        for key in keys:
            remaining = self.raw.pttl(self.prefix + key)
            if remaining < 0:
                continue
            left = remaining - int(seconds * 1000)
            if left <= 0:
                self.raw.delete(self.prefix + key)
            else:
                self.raw.pexpire(self.prefix + key, left)

    def close(self) -> None:
        keys = list(self.raw.scan_iter(self.prefix + "*"))
        if keys:
            self.raw.delete(*keys)
        self.raw.close()


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
def h(request):
    if request.param == "memory":
        yield MemoryHarness()
        return
    url = {
        "redis": lambda: request.getfixturevalue("redis_url"),
        "sentinel": lambda: request.getfixturevalue("redis_sentinel").url,
        "cluster": lambda: request.getfixturevalue("redis_cluster").url,
    }[request.param]()
    harness = RedisHarness(url)
    yield harness
    harness.close()


# -- get / set / expiry ---------------------------------------------------------------------


def test_get_of_missing_key_is_none(h):
    assert h.store.get("missing") is None


def test_set_then_get_returns_the_value(h):
    h.store.set("k", "value é ✓", 60)
    assert h.store.get("k") == "value é ✓"


def test_set_overwrites_value_and_window(h):
    h.store.set("k", "one", 10)
    h.store.set("k", "two", 100)
    assert h.store.get("k") == "two"
    assert 99 <= h.store.ttl("k") <= 100


def test_value_lives_until_its_ttl_and_not_after(h):
    h.store.set("k", "v", 10)
    h.advance(9, "k")
    assert h.store.get("k") == "v"
    h.advance(1.5, "k")
    assert h.store.get("k") is None
    assert h.store.ttl("k") is None


def test_get_many_answers_in_the_order_asked_with_none_for_missing_or_expired(h):
    h.store.set("a", "1", 60)
    h.store.set("short", "2", 5)
    h.advance(6, "short")
    assert h.store.get_many("missing", "a", "short", "a") == [None, "1", None, "1"]
    assert h.store.get_many() == []


def test_set_many_sets_every_key_with_the_same_window(h):
    h.store.set("b", "old", 1000)
    h.store.set_many({"a": "1", "b": "2"}, 30)
    assert h.store.get_many("a", "b") == ["1", "2"]
    assert 29 <= h.store.ttl("b") <= 30
    h.advance(31, "a", "b")
    assert h.store.get_many("a", "b") == [None, None]
    h.store.set_many({}, 30)


def test_set_and_get_writes_one_key_and_reads_another(h):
    h.store.set("generation", "g1", 60)
    assert h.store.set_and_get("record", "r1", 30, "generation") == "g1"
    assert h.store.get("record") == "r1" and 29 <= h.store.ttl("record") <= 30
    assert h.store.set_and_get("record", "r2", 30, "missing") is None
    assert h.store.get("record") == "r2"
    # Keys of other slots in a cluster, and the key just written, read back in the same call.
    assert h.store.set_and_get("elsewhere", "x", 30, "elsewhere") == "x"
    with pytest.raises(ValueError):
        h.store.set_and_get("record", "r3", 0, "generation")
    assert h.store.get("record") == "r2"


def test_ttl_reports_the_remaining_seconds(h):
    h.store.set("k", "v", 100)
    assert 99 <= h.store.ttl("k") <= 100
    h.advance(40, "k")
    assert 59 <= h.store.ttl("k") <= 60


def test_ttl_of_missing_key_is_none(h):
    assert h.store.ttl("missing") is None


@pytest.mark.parametrize("ttl", [0, -5])
def test_non_positive_ttl_is_refused(h, ttl):
    with pytest.raises(ValueError):
        h.store.set("k", "v", ttl)
    with pytest.raises(ValueError):
        h.store.add("k", "v", ttl)
    with pytest.raises(ValueError):
        h.store.incr("k", ttl)
    assert h.store.get("k") is None


def test_redis_expiry_is_real(redis_url):
    harness = RedisHarness(redis_url)
    try:
        harness.store.set("short", "v", 1)
        harness.store.incr("short-counter", 1)
        time.sleep(1.1)
        assert harness.store.get("short") is None
        assert harness.store.incr("short-counter", 1) == 1
    finally:
        harness.close()


# -- add: only if absent ---------------------------------------------------------------------


def test_add_only_when_absent(h):
    assert h.store.add("k", "first", 60) is True
    assert h.store.add("k", "second", 60) is False
    assert h.store.get("k") == "first"


def test_add_does_not_extend_the_existing_window(h):
    h.store.add("k", "first", 60)
    h.advance(30, "k")
    assert h.store.add("k", "second", 60) is False
    assert 29 <= h.store.ttl("k") <= 30


def test_add_succeeds_again_after_expiry(h):
    assert h.store.add("k", "first", 10) is True
    h.advance(11, "k")
    assert h.store.add("k", "second", 10) is True
    assert h.store.get("k") == "second"


def test_concurrent_add_has_exactly_one_winner(h):
    results = _race(8, lambda i: h.store.add("race-add", str(i), 60))
    assert sorted(results) == [False] * 7 + [True]
    winner = results.index(True)
    assert h.store.get("race-add") == str(winner)


# -- take: atomic get-and-delete -------------------------------------------------------------


def test_take_returns_value_once(h):
    h.store.set("code", "grant-1", 60)
    assert h.store.take("code") == "grant-1"
    assert h.store.take("code") is None
    assert h.store.get("code") is None


def test_take_of_missing_or_expired_key_is_none(h):
    assert h.store.take("missing") is None
    h.store.set("code", "v", 5)
    h.advance(6, "code")
    assert h.store.take("code") is None


def test_concurrent_takes_have_exactly_one_winner(h):
    for round_ in range(10):
        key = f"race-take-{round_}"
        h.store.set(key, "the-code", 60)
        results = _race(8, lambda i: h.store.take(key))
        assert results.count("the-code") == 1, results
        assert results.count(None) == 7, results


# -- delete ----------------------------------------------------------------------------------


def test_delete_several_keys_at_once(h):
    h.store.set("a", "1", 60)
    h.store.set("b", "2", 60)
    h.store.set("c", "3", 60)
    h.store.delete("a", "b", "never-existed")
    assert h.store.get("a") is None
    assert h.store.get("b") is None
    assert h.store.get("c") == "3"


def test_delete_without_keys_is_harmless(h):
    h.store.set("a", "1", 60)
    h.store.delete()
    assert h.store.get("a") == "1"


# -- incr: fixed window from the first hit ---------------------------------------------------


def test_incr_counts_from_one(h):
    assert [h.store.incr("n", 60) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert h.store.get("n") == "5"


def test_incr_keeps_the_window_of_the_first_hit(h):
    assert h.store.incr("n", 100) == 1
    h.advance(40, "n")
    assert h.store.incr("n", 100) == 2
    # A later hit must not push the expiry out, or steady guessing would never be forgiven
    # and a slow attacker would stay throttled forever while a fast one resets nothing.
    assert 59 <= h.store.ttl("n") <= 60
    # One second of the window left: on Redis that second is real time, which a loaded machine
    # (three cluster nodes among the suite's processes) can spend between two commands.
    h.advance(59, "n")
    assert h.store.incr("n", 100) == 3
    h.advance(1.5, "n")
    assert h.store.get("n") is None


def test_incr_on_expired_key_restarts_at_one_with_a_new_window(h):
    h.store.incr("n", 10)
    h.store.incr("n", 10)
    h.advance(11, "n")
    assert h.store.incr("n", 30) == 1
    assert 29 <= h.store.ttl("n") <= 30


def test_concurrent_incr_loses_no_hit(h):
    results = _race(10, lambda i: h.store.incr("race-incr", 60))
    assert sorted(results) == list(range(1, 11))


def test_ping(h):
    assert h.store.ping() is True


# -- Redis down: fail closed -----------------------------------------------------------------

CLOSED_PORT = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get("k"),
        lambda s: s.get_many("k", "j"),
        lambda s: s.set("k", "v", 10),
        lambda s: s.set_many({"k": "v"}, 10),
        lambda s: s.add("k", "v", 10),
        lambda s: s.incr("k", 10),
        lambda s: s.take("k"),
        lambda s: s.delete("k"),
        lambda s: s.ttl("k"),
    ],
    ids=["get", "get_many", "set", "set_many", "add", "incr", "take", "delete", "ttl"],
)
def test_unreachable_redis_raises_store_unavailable(call):
    store = RedisStore(CLOSED_PORT, prefix=f"idp-test-{RUN_ID}-closed:")
    with pytest.raises(StoreUnavailable) as raised:
        call(store)
    # The web rooms turn ServiceUnavailable into a 503 with a message fit to show.
    assert isinstance(raised.value, ServiceUnavailable)
    assert raised.value.status == 503
    assert "temporarily unavailable" in raised.value.public
    assert "127.0.0.1" not in raised.value.public


def test_unreachable_redis_ping_is_false():
    assert RedisStore(CLOSED_PORT).ping() is False


def test_create_store_without_url_is_in_process():
    assert isinstance(create_store(None), MemoryStore)
    assert isinstance(create_store(""), MemoryStore)


def test_create_store_with_url_is_redis_with_prefix(redis_url):
    prefix = f"idp-test-{RUN_ID}-create:"
    store = create_store(redis_url, prefix)
    assert isinstance(store, RedisStore)
    store.set("k", "v", 30)
    raw = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert raw.get(prefix + "k") == "v"
    finally:
        raw.delete(prefix + "k")
        raw.close()


# -- helpers ---------------------------------------------------------------------------------


def _race(n: int, fn) -> list:
    """Run fn(i) in n threads released together; return their results in thread order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=5)
            results[i] = fn(i)
        except Exception as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors, errors
    return results
