"""Real `idp serve` processes on loopback ports, against this run's PostgreSQL database and Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import RUN_ID, fresh_pg_database

IDP = str(Path(sys.executable).with_name("idp"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveDeployment:
    """One PostgreSQL database and one Redis prefix, shared by any number of server processes."""

    def __init__(self, tmp_path: Path, database_url: str, redis_url: str):
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "IDP_DATABASE_URL": database_url,
            "IDP_REDIS_URL": redis_url,
            "IDP_REDIS_PREFIX": f"idp-test-{RUN_ID}-e2e-{tmp_path.name}:",
            "IDP_INSTANCE_DIR": str(tmp_path / "instance"),
            "IDP_SECRET_KEY": "e2e-secret-" + RUN_ID,
            "IDP_MAIL_URL": f"file://{tmp_path}/mail",
            "IDP_ARGON2_MEMORY_KIB": "1024",
            "IDP_ARGON2_TIME_COST": "1",
            "IDP_ARGON2_PARALLELISM": "1",
        }
        self.processes: list[subprocess.Popen] = []
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.env["IDP_ISSUER"] = self.issuer

    def cli(self, *args: str) -> dict:
        done = subprocess.run([IDP, *args], env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def start(self, port: int | None = None, workers: int = 2) -> str:
        port = port or self.port
        log = open(self.tmp_path / f"serve-{port}.log", "a")  # a restart on the same port keeps the first log
        process = subprocess.Popen(
            [IDP, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.processes.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError((self.tmp_path / f"serve-{port}.log").read_text())
            try:
                if requests.get(base + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return base
            except requests.ConnectionError:
                time.sleep(0.2)
        raise AssertionError("idp serve did not come up within 30 s")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()


def sign_in_form(page_html: str, email: str, password: str) -> dict:
    """The hosted sign-in form (SPEC §4 field names) filled in as a person's browser submits it."""
    assert 'name="username"' in page_html and 'name="password"' in page_html, page_html[:300]
    return {
        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page_html).group(1),
        "next": re.search(r'name="next" value="([^"]*)"', page_html).group(1),
        "username": email,
        "password": password,
    }


@pytest.fixture
def deployment(tmp_path, redis_url):
    name = f"idp_e2e_{RUN_ID}_{tmp_path.name[-12:].replace('-', '_').lower()}"
    with fresh_pg_database(name) as database_url:
        live = LiveDeployment(tmp_path, database_url, redis_url)
        try:
            yield live
        finally:
            live.stop()
