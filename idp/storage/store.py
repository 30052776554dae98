"""Short-lived shared state: login flows, pending authorization requests, counters.

Redis when IDP_REDIS_URL is set (shared by every instance), an in-process dictionary
otherwise (one process only). Both honour the same contract, proved by one test suite.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis

from idp.domain.errors import ServiceUnavailable


class Store(Protocol):
    def get(self, key: str) -> str | None: ...
    def get_many(self, *keys: str) -> list[str | None]: ...
    def set(self, key: str, value: str, ttl: int) -> None: ...
    def set_many(self, values: dict[str, str], ttl: int) -> None: ...
    def add(self, key: str, value: str, ttl: int) -> bool: ...
    def take(self, key: str) -> str | None: ...
    def delete(self, *keys: str) -> None: ...
    def incr(self, key: str, ttl: int) -> int: ...
    def ttl(self, key: str) -> int | None: ...
    def ping(self) -> bool: ...


class StoreUnavailable(ServiceUnavailable):
    def __init__(self, detail: str):
        super().__init__("The service is temporarily unavailable. Please try again in a moment.", detail)


def _check_ttl(ttl: int) -> int:
    ttl = int(ttl)
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    return ttl


class MemoryStore:
    """Thread-safe dictionary with expiry, for the embedded single-process default."""

    def __init__(self, clock=time.monotonic):
        self._data: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._writes = 0

    def _live(self, key: str):
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._data[key]
            return None
        return item

    def _sweep(self) -> None:
        # Expired keys nobody reads again would pile up; sweep now and then.
        self._writes += 1
        if self._writes % 1000 == 0:
            now = self._clock()
            for key in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[key]

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._live(key)
            return item[0] if item else None

    def get_many(self, *keys: str) -> list[str | None]:
        with self._lock:
            return [item[0] if item else None for item in map(self._live, keys)]

    def set(self, key: str, value: str, ttl: int) -> None:
        self.set_many({key: value}, ttl)

    def set_many(self, values: dict[str, str], ttl: int) -> None:
        ttl = _check_ttl(ttl)
        with self._lock:
            expiry = self._clock() + ttl
            for key, value in values.items():
                self._data[key] = (value, expiry)
                self._sweep()

    def add(self, key: str, value: str, ttl: int) -> bool:
        ttl = _check_ttl(ttl)
        with self._lock:
            if self._live(key):
                return False
            self._data[key] = (value, self._clock() + ttl)
            self._sweep()
            return True

    def take(self, key: str) -> str | None:
        with self._lock:
            item = self._live(key)
            if item is None:
                return None
            del self._data[key]
            return item[0]

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def incr(self, key: str, ttl: int) -> int:
        ttl = _check_ttl(ttl)
        with self._lock:
            item = self._live(key)
            if item is None:
                self._data[key] = ("1", self._clock() + ttl)
                self._sweep()
                return 1
            value = int(item[0]) + 1
            self._data[key] = (str(value), item[1])
            return value

    def ttl(self, key: str) -> int | None:
        with self._lock:
            item = self._live(key)
            if item is None:
                return None
            return max(1, int(item[1] - self._clock() + 0.999))

    def ping(self) -> bool:
        return True


class RedisStore:
    """Redis-backed store; every failure to reach Redis becomes StoreUnavailable (fail closed)."""

    # INCR then set the window on the first hit only, atomically, so a counter never loses its expiry.
    _INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""

    def __init__(self, url: str, prefix: str = "idp:"):
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )
        self._prefix = prefix
        self._incr = self._redis.register_script(self._INCR)

    def _k(self, key: str) -> str:
        return self._prefix + key

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def get(self, key: str) -> str | None:
        return self._call(self._redis.get, self._k(key))

    def get_many(self, *keys: str) -> list[str | None]:
        return self._call(self._redis.mget, [self._k(k) for k in keys]) if keys else []

    def set(self, key: str, value: str, ttl: int) -> None:
        self._call(lambda: self._redis.set(self._k(key), value, ex=_check_ttl(ttl)))

    def set_many(self, values: dict[str, str], ttl: int) -> None:
        """One round trip for all of them (a pipeline, not a transaction: each SET stands alone)."""
        ttl = _check_ttl(ttl)
        if not values:
            return

        def run():
            pipe = self._redis.pipeline(transaction=False)
            for key, value in values.items():
                pipe.set(self._k(key), value, ex=ttl)
            pipe.execute()

        self._call(run)

    def add(self, key: str, value: str, ttl: int) -> bool:
        return bool(self._call(lambda: self._redis.set(self._k(key), value, ex=_check_ttl(ttl), nx=True)))

    def take(self, key: str) -> str | None:
        return self._call(self._redis.getdel, self._k(key))

    def delete(self, *keys: str) -> None:
        if keys:
            self._call(self._redis.delete, *[self._k(k) for k in keys])

    def incr(self, key: str, ttl: int) -> int:
        return int(self._call(lambda: self._incr(keys=[self._k(key)], args=[_check_ttl(ttl)])))

    def ttl(self, key: str) -> int | None:
        value = self._call(self._redis.ttl, self._k(key))
        return None if value is None or value < 0 else int(value)

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False


def create_store(redis_url: str | None, prefix: str = "idp:") -> Store:
    return RedisStore(redis_url, prefix) if redis_url else MemoryStore()
