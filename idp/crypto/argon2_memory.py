"""argon2id hashing and verification that keep their working memory from one password to the next.

libargon2 allocates `memory_cost` KiB for every hash and frees it afterwards. With the defaults
that is 64 MiB of fresh pages per sign-in, and the kernel faulting and zeroing them costs about a
fifth of a verify's CPU time (30 of 150 ms here). libargon2 lets the caller allocate that memory;
here a buffer is lent for the hash, wiped by libargon2 before it comes back (it clears its
working memory before calling the free hook), and kept for the next check. Buffers idle for
`keep_seconds` are let go, so a worker holds no more memory between bursts of sign-ins than before.

New hashes are made the same way, in the form argon2-cffi writes. Only that form
(`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) is checked on this path; any other stored hash is checked
by argon2-cffi as it stands.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import mmap
import os
import re
import threading
import time

from argon2 import PasswordHasher
from argon2.exceptions import HashingError, InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ARGON2_VERSION, Type, core, error_to_str, ffi, lib

_IDP_FORM = re.compile(
    rb"\$argon2id\$v=19\$m=([1-9][0-9]{0,9}),t=([1-9][0-9]{0,9}),p=([1-9][0-9]{0,7})"
    rb"\$([A-Za-z0-9+/]{11,})\$([A-Za-z0-9+/]{6,})"
)


def _decode_unpadded_b64(text: bytes) -> bytes:
    return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)


def _encode_unpadded_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


_HUGE_PAGE = 2 << 20


def _new_buffer(size: int):
    # Private anonymous pages, aligned to and marked for 2 MiB pages where the kernel offers them
    # (Linux's transparent huge pages in "madvise" mode): argon2 reads its blocks all over the
    # buffer, and with 4 KiB pages nearly every read of a 64 MiB buffer misses the TLB. A verify
    # costs about 7 % less CPU this way. The buffer is unmapped when the pool lets go of it.
    if not hasattr(mmap, "MAP_ANONYMOUS"):  # a platform without them: the C heap, as libargon2 would
        return ffi.new("uint8_t[]", size)
    pages = mmap.mmap(-1, size + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        pages.madvise(mmap.MADV_HUGEPAGE)
    start = -int(ffi.cast("uintptr_t", ffi.from_buffer(pages))) % _HUGE_PAGE
    return ffi.from_buffer("uint8_t[]", memoryview(pages)[start:start + size], require_writable=True)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _others_runnable() -> int | None:
    """Threads on this machine that are running or waiting for a CPU right now, besides the caller
    (Linux's /proc/loadavg); None where that cannot be read."""
    try:
        with open("/proc/loadavg", "rb") as loadavg:
            running = int(loadavg.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - 1)


class WorkingMemory:
    """Buffers lent to libargon2 through its allocate/free hooks, kept while sign-ins keep coming."""

    def __init__(self, keep_seconds: float = 5.0):
        self.keep_seconds = keep_seconds
        self._lock = threading.Lock()
        self._idle: list[tuple[int, object, float]] = []  # (size, buffer, when it came back)
        self._lent: dict[int, object] = {}  # address -> buffer
        self._trim_timer: threading.Timer | None = None
        self.buffers_made = 0
        # An exception inside a hook must reach libargon2 as a failed allocation, never as success
        # with no memory behind it.
        self.allocate_hook = ffi.callback("int(uint8_t **, size_t)", lambda out, size: self._allocate(out, size),
                                          error=lib.ARGON2_MEMORY_ALLOCATION_ERROR)
        self.free_hook = ffi.callback("void(uint8_t *, size_t)", lambda memory, size: self._free(memory, size))

    def _allocate(self, out, size: int) -> int:
        with self._lock:
            index = next((i for i, (s, _, _) in enumerate(self._idle) if s == size), None)
            buffer = self._idle.pop(index)[1] if index is not None else None
            self.buffers_made += buffer is None
        if buffer is None:
            try:
                buffer = _new_buffer(size)
            except (MemoryError, OSError):
                out[0] = ffi.NULL
                return lib.ARGON2_MEMORY_ALLOCATION_ERROR
        address = int(ffi.cast("uintptr_t", buffer))
        with self._lock:
            self._lent[address] = buffer
        out[0] = buffer
        return lib.ARGON2_OK

    def _free(self, memory, size: int) -> None:
        with self._lock:
            buffer = self._lent.pop(int(ffi.cast("uintptr_t", memory)), None)
            if buffer is None:
                return
            self._idle.append((size, buffer, time.monotonic()))
            if self._trim_timer is None:
                self._arm(self.keep_seconds)

    def _arm(self, delay: float) -> None:
        self._trim_timer = threading.Timer(delay, self._trim_when_due)
        self._trim_timer.daemon = True
        self._trim_timer.start()

    def _trim_when_due(self) -> None:
        # The timer's own run: let go of what has idled long enough, and come back for the rest.
        with self._lock:
            now = time.monotonic()
            self._idle = [b for b in self._idle if now - b[2] < self.keep_seconds]
            self._trim_timer = None
            if self._idle:
                self._arm(self.keep_seconds - (now - min(b[2] for b in self._idle)))

    def trim(self) -> None:
        """Let go of every idle buffer now."""
        with self._lock:
            self._idle = []

    def forget_after_fork(self) -> None:
        # A forked worker must not hold its parent's buffers (they would count in its RSS) nor wait
        # for a timer thread that did not come along.
        self._lock = threading.Lock()
        self._idle, self._lent, self._trim_timer = [], {}, None

    def held_bytes(self) -> int:
        with self._lock:
            return sum(size for size, _, _ in self._idle)


_shared: WorkingMemory | None = None
_shared_lock = threading.Lock()


def shared_working_memory() -> WorkingMemory | None:
    """The process's pool, or None where libffi cannot make callbacks (then argon2-cffi allocates)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            try:
                _shared = WorkingMemory()
            except (MemoryError, OSError):
                return None
            os.register_at_fork(after_in_child=_shared.forget_after_fork)
        return _shared


class MemoryReusingHasher(PasswordHasher):
    """argon2-cffi's PasswordHasher whose argon2id hashes and checks borrow their working memory
    from a pool."""

    def __init__(self, *args, memory: WorkingMemory | None = None, cpus: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory = memory
        self.cpus = cpus or _usable_cpus()
        self._running = 0
        self._running_lock = threading.Lock()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        # A sign-in whose hash has old parameters is hashed again right after its check.
        if self.memory is None or self.type is not Type.ID:
            return super().hash(password, salt=salt)
        salt = salt or os.urandom(self.salt_len)
        derived = self._derive(self._secret(password), salt, self.memory_cost, self.time_cost, self.parallelism,
                               self.hash_len, HashingError)
        return (f"$argon2id$v={ARGON2_VERSION}$m={self.memory_cost},t={self.time_cost},p={self.parallelism}"
                f"${_encode_unpadded_b64(salt)}${_encode_unpadded_b64(derived)}")

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 (the parent's name)
        encoded = hash.encode("ascii") if isinstance(hash, str) else hash
        found = _IDP_FORM.fullmatch(encoded) if self.memory is not None else None
        if found is None:
            return super().verify(hash, password)
        memory_kib, time_cost, lanes = (int(v) for v in found.group(1, 2, 3))
        if memory_kib >= 2**32 or time_cost >= 2**32:
            raise InvalidHashError
        try:
            salt, expected = _decode_unpadded_b64(found.group(4)), _decode_unpadded_b64(found.group(5))
        except (binascii.Error, ValueError):
            raise InvalidHashError from None
        derived = self._derive(self._secret(password), salt, memory_kib, time_cost, lanes, len(expected),
                               VerificationError)
        if not hmac.compare_digest(derived, expected):
            raise VerifyMismatchError()
        return True

    def _secret(self, password: str | bytes) -> bytes:
        return password.encode(self.encoding) if isinstance(password, str) else password

    def threads_for(self, lanes: int, running: int, others_runnable: int | None = None) -> int:
        """Threads for a hash of `lanes` lanes while `running` hashes (this one among them) run in
        this process and `others_runnable` threads of the machine want a CPU besides the caller.

        The result does not depend on it: libargon2 computes the same lanes whatever number of
        threads share them. Its threads are started and joined again for every slice of every pass
        (48 times per hash with t=3, p=4), so threads beyond the free CPUs only cost: measured on two
        CPUs, a lone hash takes 78 ms with two threads against 90 with four, and hashes side by side
        cost least with one thread each (136 against 140 ms of CPU, 128 when a single one runs).
        The other gunicorn workers' hashes count too, which this process sees only as the machine's
        runnable threads: two processes verifying side by side ran 14.9–16.5 verify/s with one
        thread each against 13.5–16.0 with two.
        """
        free = self.cpus // max(1, running)
        if others_runnable is not None:
            free = min(free, self.cpus - others_runnable)
        return max(1, min(lanes, free))

    def _derive(self, secret: bytes, salt: bytes, memory_kib: int, time_cost: int, lanes: int, length: int,
                error: type[Exception]) -> bytes:
        # Read before the lock: only the count of this process's hashes needs it.
        others_runnable = _others_runnable()
        with self._running_lock:
            self._running += 1
            threads = self.threads_for(lanes, self._running, others_runnable)
        try:
            return self._derive_with(secret, salt, memory_kib, time_cost, lanes, threads, length, error)
        finally:
            with self._running_lock:
                self._running -= 1

    def _derive_with(self, secret: bytes, salt: bytes, memory_kib: int, time_cost: int, lanes: int, threads: int,
                     length: int, error: type[Exception]) -> bytes:
        out = ffi.new("uint8_t[]", length)
        # Held here until libargon2 returns: a cdata made inside the initialiser below would be freed
        # as soon as the context is built, and libargon2 reads the password and salt only after it
        # has called the allocate hook, whose Python code may reuse that memory.
        password_bytes, salt_bytes = ffi.new("uint8_t[]", secret), ffi.new("uint8_t[]", salt)
        context = ffi.new("argon2_context *", {
            "out": out, "outlen": length, "pwd": password_bytes, "pwdlen": len(secret),
            "salt": salt_bytes, "saltlen": len(salt), "secret": ffi.NULL, "secretlen": 0,
            "ad": ffi.NULL, "adlen": 0, "t_cost": time_cost, "m_cost": memory_kib, "lanes": lanes,
            "threads": threads, "version": ARGON2_VERSION, "allocate_cbk": self.memory.allocate_hook,
            "free_cbk": self.memory.free_hook, "flags": lib.ARGON2_DEFAULT_FLAGS,
        })
        result = core(context, Type.ID.value)
        if result != lib.ARGON2_OK:
            raise error(error_to_str(result))
        return bytes(ffi.buffer(out, length))
