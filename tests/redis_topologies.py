"""Throwaway Redis topologies on loopback for the store's tests: a master with a replica watched by
one Sentinel, and a three-node Cluster. Real redis-server processes on free ports, keeping nothing
on disk beyond their own folder, stopped at the end of the test session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

SENTINEL_SERVICE = "idp-test"
START_TIMEOUT = 20.0


class TopologyUnavailable(RuntimeError):
    pass


def free_port(highest: int = 65535) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port <= highest:
            return port


# A cluster node also listens on its port + 10000 for the cluster bus.
HIGHEST_CLUSTER_PORT = 65535 - 10000


def _wait(what: str, check, timeout: float = START_TIMEOUT, processes: Processes | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if processes is not None:
            processes.check()
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        time.sleep(0.1)
    raise TopologyUnavailable(f"{what} not ready within {timeout:.0f} s ({last_error})")


class Processes:
    def __init__(self, folder: Path):
        self.folder = folder
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise TopologyUnavailable("redis-server is not installed")
        log = open(self.folder / f"{name}.log", "ab")
        self.running.append(subprocess.Popen([binary, *args], stdout=log, stderr=subprocess.STDOUT,
                                             cwd=self.folder, start_new_session=True))
        log.close()

    def check(self) -> None:
        """A server that exited at start (its port taken meanwhile, say) fails the wait at once."""
        for process in self.running:
            if process.poll() is not None:
                raise TopologyUnavailable(f"redis-server {' '.join(process.args[1:3])} exited with {process.returncode}")

    def stop(self) -> None:
        for process in self.running:
            process.terminate()
        for process in self.running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _server_args(port: int, folder: Path) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]


class Topology:
    """Started in the constructor; whatever did start is stopped again if the rest does not."""

    url: str

    def __init__(self, folder: Path):
        self.processes = Processes(folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._start(folder)
        except BaseException:
            self.processes.stop()
            raise

    def _start(self, folder: Path) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.processes.stop()


class SentinelTopology(Topology):
    """A master, one replica and one Sentinel (quorum 1) that may fail the master over to the replica."""

    def _start(self, folder: Path) -> None:
        self.master_port, self.replica_port, self.sentinel_port = free_port(), free_port(), free_port()
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SENTINEL_SERVICE}"
        self.processes.start("master", *_server_args(self.master_port, folder))
        self.processes.start("replica", *_server_args(self.replica_port, folder), "--dbfilename", "replica.rdb",
                             "--replicaof", "127.0.0.1", str(self.master_port))
        config = folder / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 2000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
        )
        self.processes.start("sentinel", str(config), "--sentinel")
        replica = self.node(self.replica_port)
        _wait("the replica", lambda: replica.info("replication").get("master_link_status") == "up",
              processes=self.processes)
        _wait("the Sentinel", self._replica_promotable)

    def _replica_promotable(self) -> bool:
        """Sentinel promotes only a replica it has heard from and whose link to the master is up."""
        replicas = self.sentinel().sentinel_slaves(SENTINEL_SERVICE)
        return (len(replicas) == 1 and replicas[0].get("master-link-status") == "ok"
                and not replicas[0].get("is_disconnected") and not replicas[0].get("is_sdown"))

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2)

    def sentinel(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.sentinel_port, decode_responses=True, socket_timeout=2)

    def master_port_now(self) -> int:
        return int(self.sentinel().sentinel_get_master_addr_by_name(SENTINEL_SERVICE)[1])

    def fail_over(self) -> int:
        """Make the current replica the master; returns the new master's port once Sentinel names it."""
        before = self.master_port_now()
        _wait("a promotable replica", self._replica_promotable)
        self.sentinel().execute_command("SENTINEL", "FAILOVER", SENTINEL_SERVICE)
        _wait("the failover", lambda: self.master_port_now() != before)
        after = self.master_port_now()
        _wait("the new master", lambda: self.node(after).info("replication")["role"] == "master")
        # Until Sentinel has turned the old master into a replica, it still takes writes that the
        # switch then drops (replication is asynchronous): the window every Sentinel failover has.
        _wait("the old master's demotion", lambda: self.node(before).info("replication")["role"] == "slave")
        return after


class ClusterTopology(Topology):
    """Three masters sharing the 16384 slots, no replicas."""

    def _start(self, folder: Path) -> None:
        self.ports = [free_port(HIGHEST_CLUSTER_PORT) for _ in range(3)]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])
        for port in self.ports:
            self.processes.start(f"node-{port}", *_server_args(port, folder), "--cluster-enabled", "yes",
                                 "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "5000",
                                 "--dbfilename", f"dump-{port}.rdb")
        for port in self.ports:
            _wait(f"cluster node {port}", lambda port=port: redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping(),
                  processes=self.processes)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise TopologyUnavailable("redis-cli is not installed")
        created = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                                  "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise TopologyUnavailable(f"redis-cli --cluster create failed: {created.stdout[-500:]}{created.stderr[-500:]}")
        for port in self.ports:
            _wait("the cluster", lambda port=port: redis.Redis(host="127.0.0.1", port=port, decode_responses=True,
                                                        socket_timeout=2).cluster("info")["cluster_state"] == "ok")
