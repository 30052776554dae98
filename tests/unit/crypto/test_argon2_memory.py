"""argon2id verification that lends libargon2 its working memory from a pool (idp/crypto/argon2_memory)."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import HashingError, InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ffi

from idp.crypto import argon2_memory
from idp.crypto.argon2_memory import MemoryReusingHasher, WorkingMemory, shared_working_memory
from idp.crypto.passwords import Passwords

PASSWORD = "correct horse battery staple"
SMALL = {"time_cost": 1, "memory_cost": 1024, "parallelism": 2}


@pytest.fixture
def memory() -> WorkingMemory:
    return WorkingMemory(keep_seconds=60)


@pytest.fixture
def hasher(memory) -> MemoryReusingHasher:
    return MemoryReusingHasher(**SMALL, memory=memory)


@pytest.mark.parametrize("params", [SMALL, {"time_cost": 2, "memory_cost": 2048, "parallelism": 1},
                                    {"time_cost": 3, "memory_cost": 512, "parallelism": 4},
                                    {"time_cost": 1, "memory_cost": 1024, "parallelism": 2, "salt_len": 32,
                                     "hash_len": 64}])
def test_agrees_with_argon2_cffi_on_every_parameter_set(hasher, memory, params):
    stored = PasswordHasher(**params).hash(PASSWORD)
    assert hasher.verify(stored, PASSWORD) is True
    with pytest.raises(VerifyMismatchError):
        hasher.verify(stored, PASSWORD + "!")
    with pytest.raises(VerifyMismatchError):
        hasher.verify(stored, "")
    assert memory.buffers_made == 1, "the check went through the pool"


@pytest.mark.parametrize("params", [SMALL, {"time_cost": 2, "memory_cost": 2048, "parallelism": 1, "salt_len": 32,
                                              "hash_len": 64}])
def test_a_hash_is_the_one_argon2_cffi_writes(memory, params):
    salt = os.urandom(params.get("salt_len", 16))
    pooled = MemoryReusingHasher(**params, memory=memory)
    stock = PasswordHasher(**params)
    assert pooled.hash(PASSWORD, salt=salt) == stock.hash(PASSWORD, salt=salt)
    made = pooled.hash(PASSWORD)
    assert stock.verify(made, PASSWORD) is True
    assert stock.check_needs_rehash(made) is False
    assert memory.buffers_made == 1, "both hashes went through the pool"


@pytest.mark.parametrize("cpus", [1, 3, 64])
def test_the_same_hash_whatever_number_of_threads_computes_it(memory, cpus):
    params = {"time_cost": 1, "memory_cost": 1024, "parallelism": 4}
    salt = os.urandom(16)
    expected = PasswordHasher(**params).hash(PASSWORD, salt=salt)
    assert MemoryReusingHasher(**params, memory=memory, cpus=cpus).hash(PASSWORD, salt=salt) == expected


def test_threads_are_the_free_cpus_shared_among_the_hashes_running():
    hasher = MemoryReusingHasher(**SMALL, memory=WorkingMemory(), cpus=2)
    assert hasher.threads_for(lanes=4, running=1) == 2, "a lone hash takes both CPUs, not four threads"
    assert hasher.threads_for(lanes=4, running=2) == 1
    assert hasher.threads_for(lanes=4, running=5) == 1
    assert hasher.threads_for(lanes=1, running=1) == 1
    assert MemoryReusingHasher(**SMALL, cpus=16).threads_for(lanes=4, running=2) == 4, "never more than lanes"


def test_threads_leave_the_cpus_other_processes_are_using_to_them():
    hasher = MemoryReusingHasher(**SMALL, memory=WorkingMemory(), cpus=2)
    assert hasher.threads_for(lanes=4, running=1, others_runnable=0) == 2, "an idle machine: both CPUs"
    assert hasher.threads_for(lanes=4, running=1, others_runnable=1) == 1, "another worker's hash has one"
    assert hasher.threads_for(lanes=4, running=1, others_runnable=40) == 1, "always at least one"
    assert MemoryReusingHasher(**SMALL, cpus=8).threads_for(lanes=4, running=1, others_runnable=5) == 3
    assert hasher.threads_for(lanes=4, running=1, others_runnable=None) == 2, "unknown: this process alone decides"


def test_the_machines_runnable_threads_are_read_without_the_caller(monkeypatch):
    import io

    if os.path.exists("/proc/loadavg"):
        assert argon2_memory._others_runnable() >= 0
    # The fourth field counts the threads running or ready to run, the reader among them.
    monkeypatch.setattr(argon2_memory, "open", lambda *a, **k: io.BytesIO(b"1.52 1.10 0.98 3/142 6819\n"),
                        raising=False)
    assert argon2_memory._others_runnable() == 2
    monkeypatch.setattr(argon2_memory, "open", lambda *a, **k: (_ for _ in ()).throw(OSError("no /proc")),
                        raising=False)
    assert argon2_memory._others_runnable() is None


def test_a_hash_that_starts_beside_another_takes_what_is_left(memory, monkeypatch):
    monkeypatch.setattr(argon2_memory, "_others_runnable", lambda: 0)  # nothing else wants the CPUs
    hasher = MemoryReusingHasher(time_cost=1, memory_cost=1024, parallelism=4, memory=memory, cpus=2)
    stored = hasher.hash(PASSWORD)
    both_inside = threading.Barrier(2)
    chosen: list[int] = []
    derive = hasher._derive_with

    def derive_when_both_run(secret, salt, memory_kib, time_cost, lanes, threads, length, error):
        chosen.append(threads)
        both_inside.wait(10)
        return derive(secret, salt, memory_kib, time_cost, lanes, threads, length, error)

    monkeypatch.setattr(hasher, "_derive_with", derive_when_both_run)
    workers = [threading.Thread(target=hasher.verify, args=(stored, PASSWORD)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert sorted(chosen) == [1, 2], "the first one alone takes both CPUs; the next one, started while it runs, one"
    assert hasher._running == 0, "every hash counted itself out"


# MemoryError from the C heap, OSError (ENOMEM) from mmap when the kernel refuses the mapping.
@pytest.mark.parametrize("refusal", [MemoryError, OSError(12, "Cannot allocate memory")])
def test_a_hash_that_cannot_get_memory_fails(hasher, monkeypatch, refusal):
    def out_of_memory(size):
        raise refusal

    monkeypatch.setattr(argon2_memory, "_new_buffer", out_of_memory)
    escaped: list = []
    monkeypatch.setattr(sys, "unraisablehook", escaped.append)
    with pytest.raises(HashingError):
        hasher.hash(PASSWORD)
    assert escaped == [], "refused in the hook, not left to the callback's last resort"


def test_one_buffer_serves_every_check_in_turn(hasher, memory):
    stored = hasher.hash(PASSWORD)
    for _ in range(5):
        assert hasher.verify(stored, PASSWORD) is True
    assert memory.buffers_made == 1
    assert memory.held_bytes() == SMALL["memory_cost"] * 1024


def test_a_returned_buffer_holds_nothing_of_the_hash(hasher, memory):
    # libargon2 clears its working memory before the free hook gives it back; a kept buffer must not
    # keep blocks derived from a password.
    hasher.verify(hasher.hash(PASSWORD), PASSWORD)
    [(size, buffer, _)] = memory._idle
    assert size == SMALL["memory_cost"] * 1024
    assert not any(bytes(ffi.buffer(buffer, size)))


def test_checks_at_once_all_verify_and_give_their_buffers_back(hasher, memory):
    stored = hasher.hash(PASSWORD)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def check():
        barrier.wait(10)
        results.append(hasher.verify(stored, PASSWORD))

    threads = [threading.Thread(target=check) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [True] * 4
    assert 1 <= memory.buffers_made <= 4
    assert not memory._lent, "every buffer came back"


def test_idle_buffers_are_let_go():
    memory = WorkingMemory(keep_seconds=0.2)
    hasher = MemoryReusingHasher(**SMALL, memory=memory)
    hasher.verify(hasher.hash(PASSWORD), PASSWORD)
    assert memory.held_bytes() > 0
    deadline = time.monotonic() + 10
    while memory.held_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert memory.held_bytes() == 0


def _mapping_of(address: int) -> dict | None:
    """The /proc/self/smaps entry of the mapping holding `address`, as its fields."""
    entry = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                if entry is not None:
                    return entry
                start, end = (int(part, 16) for part in head.split("-"))
                entry = {} if start <= address < end else None
            elif entry is not None:
                key, _, value = line.partition(":")
                entry[key] = value.strip()
    return entry


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's /proc")
def test_buffers_are_marked_for_huge_pages_and_unmapped_when_let_go():
    import gc

    memory = WorkingMemory(keep_seconds=60)
    hasher = MemoryReusingHasher(time_cost=1, memory_cost=4096, parallelism=1, memory=memory)
    hasher.verify(hasher.hash(PASSWORD), PASSWORD)
    [(_, buffer, _)] = memory._idle
    address = int(ffi.cast("uintptr_t", buffer))
    assert address % (2 << 20) == 0, "starts on a 2 MiB boundary, so whole huge pages fit"
    mapping = _mapping_of(address)
    assert mapping is not None
    assert "hg" in mapping["VmFlags"].split(), "madvise(MADV_HUGEPAGE) was asked for"
    assert "Anonymous" in mapping and mapping["Shared_Dirty"] == "0 kB", "private, not shared memory"
    del buffer
    memory.trim()
    gc.collect()
    assert _mapping_of(address) is None, "the pages went back to the kernel"


def test_a_forked_child_holds_none_of_its_parents_buffers():
    memory = shared_working_memory()
    hasher = MemoryReusingHasher(**SMALL, memory=memory)
    hasher.verify(hasher.hash(PASSWORD), PASSWORD)
    assert memory.held_bytes() > 0
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        os._exit(0 if memory.held_bytes() == 0 and not memory._lent else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert memory.held_bytes() > 0, "the parent keeps its own"


@pytest.mark.parametrize("stored", [
    PasswordHasher(**SMALL, type=Type.I).hash(PASSWORD),
    PasswordHasher(**SMALL, type=Type.D).hash(PASSWORD),
])
def test_other_argon2_forms_are_checked_by_argon2_cffi(hasher, memory, stored):
    assert hasher.verify(stored, PASSWORD) is True
    with pytest.raises(VerifyMismatchError):
        hasher.verify(stored, "wrong")
    assert memory.buffers_made == 0


@pytest.mark.parametrize("garbage", [
    "$argon2id$v=19$m=1024,t=1,p=2$c29tZXNhbHRzb21lc2FsdA$!!!notbase64!!!",
    "$argon2id$v=19$m=1024,t=1,p=2$c29tZXNhbHRzb21lc2FsdA",
    "$argon2id$v=19$m=99999999999,t=1,p=2$c29tZXNhbHRzb21lc2FsdA$c29tZWhhc2g",
    "not a hash",
])
def test_malformed_hashes_are_refused(hasher, garbage):
    with pytest.raises((InvalidHashError, VerificationError)):
        hasher.verify(garbage, PASSWORD)


def test_parameters_libargon2_refuses_fail_the_check(hasher):
    # Four lanes need at least 8 × 4 KiB: libargon2 answers with an error code, not a crash.
    with pytest.raises(VerificationError):
        hasher.verify("$argon2id$v=19$m=8,t=1,p=4$c29tZXNhbHRzb21lc2FsdA$c29tZWhhc2hzb21laGFzaA", PASSWORD)


@pytest.mark.parametrize("refusal", [MemoryError, OSError(12, "Cannot allocate memory")])
def test_a_failed_allocation_fails_the_check_closed(hasher, memory, monkeypatch, refusal):
    stored = hasher.hash(PASSWORD)
    memory.trim()

    def out_of_memory(size):
        raise refusal

    monkeypatch.setattr(argon2_memory, "_new_buffer", out_of_memory)
    escaped: list = []
    monkeypatch.setattr(sys, "unraisablehook", escaped.append)
    with pytest.raises(VerificationError):
        hasher.verify(stored, PASSWORD)
    assert escaped == [], "refused in the hook, not left to the callback's last resort"
    passwords = Passwords(1, 1024, 2, 1)
    passwords._hasher = hasher
    assert passwords.verify(stored, PASSWORD) is False


def test_idps_password_checks_take_the_pool():
    passwords = Passwords(1, 1024, 2, 1)
    memory = shared_working_memory()
    stored = passwords.hash(PASSWORD)
    memory.trim()
    assert passwords.verify(stored, PASSWORD) is True
    assert passwords.verify(stored, "wrong") is False
    assert memory.held_bytes() == 1024 * 1024, "both checks used one kept buffer"
    assert memory._lent == {}


def test_without_anonymous_mappings_the_buffers_come_from_the_c_heap(monkeypatch):
    monkeypatch.delattr(argon2_memory.mmap, "MAP_ANONYMOUS")
    memory = WorkingMemory(keep_seconds=60)
    hasher = MemoryReusingHasher(**SMALL, memory=memory)
    assert hasher.verify(hasher.hash(PASSWORD), PASSWORD) is True
    assert memory.buffers_made == 1



class _PoisoningFFI:
    """argon2_memory's cffi, with every ffi.new freed through an allocator that overwrites the memory
    with 0xAA first: a pointer that outlives its owner then reads that, never what it held."""

    def __init__(self, real):
        import cffi

        self._real = real
        libc_ffi = cffi.FFI()
        libc_ffi.cdef("void *malloc(size_t); void free(void *); void *memset(void *, int, size_t);")
        libc = libc_ffi.dlopen(None)
        sizes: dict[int, int] = {}

        def allocate(size):
            address = int(libc_ffi.cast("uintptr_t", libc.malloc(size)))
            sizes[address] = size
            return real.cast("void *", address)

        def free(pointer):
            address = int(real.cast("uintptr_t", pointer))
            libc.memset(libc_ffi.cast("void *", address), 0xAA, sizes.pop(address))
            libc.free(libc_ffi.cast("void *", address))

        self.new = real.new_allocator(allocate, free)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.parametrize("cpus", [1, 2])
def test_the_password_and_salt_stay_alive_while_libargon2_reads_them(monkeypatch, cpus):
    # libargon2 asks the allocate hook for its memory first and reads the password and salt after;
    # had their C copies been freed once the context was built, it would hash what came to lie
    # there instead, the same for any password.
    monkeypatch.setattr(argon2_memory, "ffi", _PoisoningFFI(argon2_memory.ffi))
    hasher = MemoryReusingHasher(**SMALL, memory=WorkingMemory(keep_seconds=60), cpus=cpus)
    stock = PasswordHasher(**SMALL)
    salt = os.urandom(16)
    ours = hasher.hash(PASSWORD, salt=salt)
    assert ours == stock.hash(PASSWORD, salt=salt)
    assert hasher.verify(ours, PASSWORD) is True
    with pytest.raises(VerifyMismatchError):
        hasher.verify(ours, PASSWORD + "!")
    with pytest.raises(VerifyMismatchError):
        hasher.verify(stock.hash("another password", salt=salt), PASSWORD)
