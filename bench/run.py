"""Load benchmark of idp under gunicorn on PostgreSQL + Redis, driven by wrk over loopback.

    .venv/bin/python bench/run.py [--duration 10] [--repeat 1] [--connections 16] [--workers 2] [--no-peer]

Creates a throwaway PostgreSQL database and Redis prefix, runs `idp init`, registers clients and a
user, starts `idp serve` on a free 127.0.0.1 port, runs the wrk scenarios, measures back-channel
logout propagation and the whole sign-in with TOTP as sessions/s, then the reference points (a bare
Flask app under the same gunicorn settings, panva's oidc-provider from bench/peer with the same
clients and the same wrk scenarios, raw argon2 verify/s), prints a table and writes
bench/results/<timestamp>.json. Every process it started is stopped and the database and Redis keys
are dropped on the way out, whatever happened. See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import psycopg
import redis
import requests

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WRK_DIR = BENCH_DIR / "wrk"
PEER_DIR = BENCH_DIR / "peer"
RESULTS_DIR = BENCH_DIR / "results"
IDP = str(Path(sys.executable).with_name("idp"))
PG_ADMIN_URL = os.environ.get("IDP_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IDP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

EMAIL = "bench@example.com"
PASSWORD = "a long and memorable passphrase for load runs"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the code is read from the Location header
SCOPE = "openid profile email offline_access"
HTTP_TIMEOUT = 15


class BenchError(RuntimeError):
    pass


def write_results(results: dict, name: str) -> None:
    """bench/results/<name>, which the results also name (`results_file`)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / name
    results["results_file"] = str(out.relative_to(ROOT))
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile, as wrk reports them."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


# --------------------------------------------------------------------------------------------- processes

class Server:
    """A gunicorn master (idp serve or the reference app) in its own process group."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path, base_url: str, probe: str):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.base_url, self.probe = base_url, probe
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=ROOT)
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited at start:\n{self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.base_url + self.probe, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise BenchError(f"{self.name} did not answer within {timeout:.0f} s")

    def wait_for_workers(self, count: int, timeout: float = 30) -> None:
        """The probe passes once one worker answers; each worker opens its own listening socket, so the
        others may still be booting. RSS and load figures need all of them."""
        deadline = time.monotonic() + timeout
        while len(self.worker_pids()) < count:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: {len(self.worker_pids())} of {count} workers after {timeout:.0f} s")
            time.sleep(0.1)
        time.sleep(1)  # past their own start-up (app import, warm-up) before anything is measured

    def worker_pids(self) -> list[int]:
        if self.process is None or self.process.poll() is not None:
            return []
        pids = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return sorted(pids)

    def rss(self) -> dict:
        """VmRSS in MiB of the master and of each worker, read from /proc."""
        def vmrss(pid: int) -> float | None:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return round(int(line.split()[1]) / 1024, 1)
            except OSError:
                return None
            return None

        workers = [v for v in (vmrss(p) for p in self.worker_pids()) if v is not None]
        return {"master_mib": vmrss(self.process.pid) if self.process else None, "workers_mib": workers,
                "workers_max_mib": max(workers) if workers else None}

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


class LogoutReceiver:
    """The relying app's back-channel logout endpoint: records when each sid's logout token arrives."""

    def __init__(self):
        self.arrivals: dict[str, float] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                try:
                    sid = jwt_claims(form["logout_token"][0])["sid"]
                except (KeyError, IndexError, ValueError):
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver.cond:
                    receiver.arrivals.setdefault(sid, arrived)
                    receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/backchannel-logout"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> LogoutReceiver:
        self.thread.start()
        return self

    def wait_for(self, sid: str, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: sid in self.arrivals, timeout=timeout)
            return self.arrivals.get(sid)

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() would wait forever for a loop that never ran
            self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------------- deployment

def tear_down(receiver: LogoutReceiver, deployment: Deployment, workdir: Path, keep: bool) -> None:
    """The last of every run, also after a failure: each step is tried whatever the one before did."""
    try:
        receiver.stop()
    except Exception as exc:
        log(f"stopping the logout receiver: {exc}")
    try:
        deployment.drop()
    except Exception as exc:
        log(f"dropping {deployment.db_name} / {deployment.redis_prefix}*: {exc}")
    if keep:
        log(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


class Deployment:
    def __init__(self, run_id: str, workdir: Path):
        self.run_id = run_id
        self.workdir = workdir
        self.db_name = f"idp_bench_{run_id}"
        self.redis_prefix = f"idp-bench-{run_id}:"
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        self.env = {
            **os.environ,
            "IDP_ISSUER": self.issuer,
            "IDP_DATABASE_URL": f"{base}/{self.db_name}",
            "IDP_REDIS_URL": REDIS_URL,
            "IDP_REDIS_PREFIX": self.redis_prefix,
            "IDP_INSTANCE_DIR": str(workdir / "instance"),
            "IDP_SECRET_KEY": "bench-" + secrets.token_urlsafe(32),
            "IDP_MAIL_URL": f"file://{workdir}/mail",
            "IDP_CONFIG_FILE": str(workdir / "no-config.toml"),  # only this run's environment counts
        }
        # argon2 and every other setting keep their defaults: those are what is measured.
        for key in list(self.env):
            if key.startswith("IDP_") and key not in (
                "IDP_ISSUER", "IDP_DATABASE_URL", "IDP_REDIS_URL", "IDP_REDIS_PREFIX", "IDP_INSTANCE_DIR",
                "IDP_SECRET_KEY", "IDP_MAIL_URL", "IDP_CONFIG_FILE",
            ):
                del self.env[key]
        self.db_created = False

    def create_database(self) -> None:
        """This run's database, after checking that PostgreSQL and Redis both answer."""
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
            self.db_created = True
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except (psycopg.OperationalError, redis.RedisError) as exc:
            raise BenchError(f"PostgreSQL ({PG_ADMIN_URL}) and Redis ({REDIS_URL}) must be reachable: {exc}") from None

    def drop(self) -> None:
        if self.db_created:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self.db_created = False
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        for key in client.scan_iter(match=f"{self.redis_prefix}*", count=1000):
            client.delete(key)

    def cli(self, *args: str) -> dict:
        done = subprocess.run([IDP, *args], env=self.env, capture_output=True, text=True, timeout=120, cwd=ROOT)
        if done.returncode != 0:
            raise BenchError(f"idp {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def sign_in(issuer: str, client_id: str, secret: str) -> dict:
    """Authorization request → hosted sign-in form (password) → callback → code exchange.

    Returns the token response plus the wall time of the whole thing."""
    started = time.monotonic()
    browser = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(12)
    url = f"{issuer}/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": SCOPE,
        "state": state, "nonce": secrets.token_urlsafe(12), "code_challenge": challenge,
        "code_challenge_method": "S256",
    })
    response = browser.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    if response.status_code != 302 or "/login" not in response.headers.get("Location", ""):
        raise BenchError(f"authorize did not send to /login: {response.status_code} {response.text[:200]}")
    page = browser.get(urljoin(url, response.headers["Location"]), allow_redirects=False, timeout=HTTP_TIMEOUT)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    nxt = re.search(r'name="next" value="([^"]*)"', page.text)
    if not (csrf and nxt):
        raise BenchError(f"no sign-in form: {page.status_code} {page.text[:200]}")
    response = browser.post(page.url.split("?")[0], allow_redirects=False, timeout=HTTP_TIMEOUT, data={
        "csrf_token": csrf.group(1), "next": nxt.group(1), "username": EMAIL, "password": PASSWORD})
    for _ in range(6):
        location = response.headers.get("Location", "")
        if response.status_code not in (302, 303) or not location:
            raise BenchError(f"sign-in stopped at {response.status_code}: {response.text[:200]}")
        if location.startswith(REDIRECT_URI):
            break
        response = browser.get(urljoin(page.url, location), allow_redirects=False, timeout=HTTP_TIMEOUT)
    else:
        raise BenchError("sign-in never reached the redirect URI")
    params = parse_qs(urlsplit(location).query)
    if params.get("state") != [state] or "code" not in params:
        raise BenchError(f"bad callback: {location}")
    token = requests.post(f"{issuer}/token", timeout=HTTP_TIMEOUT, auth=(client_id, secret), data={
        "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier})
    if token.status_code != 200:
        raise BenchError(f"code exchange failed: {token.status_code} {token.text[:200]}")
    body = token.json()
    body["_seconds"] = time.monotonic() - started
    return body


def mint(issuer: str, client: dict, count: int, parallel: int) -> tuple[list[dict], float]:
    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        tokens = list(pool.map(lambda _: sign_in(issuer, client["client_id"], client["client_secret"]),
                               range(count)))
    return tokens, time.monotonic() - started


# --------------------------------------------------------------------------------------------- wrk

def run_wrk(url: str, script: str, args, env: dict | None = None, duration: int | None = None,
            servers: list[int] | None = None) -> dict:
    """One wrk run. With `servers` (the server's worker pids) it also says who used the CPU in the
    run, per request: the server, PostgreSQL, Redis and wrk itself."""
    duration = duration if duration is not None else args.duration
    wrk_threads = max(1, min(args.wrk_threads, args.connections))
    argv = ["wrk", "-t", str(wrk_threads), "-c", str(args.connections), "-d", f"{duration}s",
            "--timeout", f"{int(args.wrk_timeout)}s", "-s", str(WRK_DIR / script), url]
    full_env = {**os.environ, "BENCH_WRK_DIR": str(WRK_DIR), "BENCH_THREADS": str(wrk_threads), **(env or {})}
    groups = {"server": servers, "postgres": [], "redis-server": []} if servers else None
    before = cpu_by_group(groups) if groups else None
    wrk_before = reaped_children_cpu()
    done = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=duration + 60)
    wrk_cpu = reaped_children_cpu() - wrk_before
    after = cpu_by_group(groups) if groups else None
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")
    raw = json.loads(line[len("BENCH_JSON "):])
    seconds = raw["duration_us"] / 1e6
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    cpu = ({**{name: round(1e6 * (after[name] - before[name]) / raw["requests"]) for name in groups},
            "wrk": round(1e6 * wrk_cpu / raw["requests"])} if groups and raw["requests"] else None)
    return {
        "requests": raw["requests"],
        "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "errors": raw["status"] + socket_errors + raw["script_errors"],
        "error_detail": {"non_2xx_3xx": raw["status"], "socket": socket_errors, "script": raw["script_errors"]},
        "wrk": {"threads": wrk_threads, "connections": args.connections, "duration_s": duration,
                "script": f"bench/wrk/{script}"},
        **({"cpu_us_per_request": cpu} if cpu else {}),
    }


def reaped_children_cpu() -> float:
    """CPU seconds of this process's children that have exited and been waited for: wrk, once
    `subprocess.run` returns (it is gone by the second /proc snapshot). The servers are still running
    and not counted."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_run(runs: list[dict], key: str, kept: tuple[str, ...]) -> dict:
    """The run with the median `key` stands for the scenario; with several runs, each one's `kept`
    figures stay beside it as `runs_<name>`."""
    median = sorted(runs, key=lambda run: run[key] or 0)[(len(runs) - 1) // 2]
    if len(runs) == 1:
        return median
    return {**median, **{f"runs_{name}": [run[name] for run in runs] for name in kept}}


def measure(url: str, script: str, args, envs: list[dict], servers: list[int] | None = None,
            beside=None) -> dict:
    """One wrk run per env (`--repeat` of them); the run with the median req/s stands for the scenario,
    and every run's req/s is kept: on a shared 2-CPU machine a single 10-second run can catch a burst
    of somebody else's work.

    With `beside` (runs the bare-Flask reference once, returns its req/s), every run is followed by
    the reference and divided by it, and the run with the median ratio stands for the scenario: the
    machine's speed drifts by a tenth or more over the minutes between a scenario and a reference
    measured at the end of the whole run."""
    runs = []
    for env in envs:
        run = run_wrk(url, script, args, env, servers=servers)
        if beside is not None:
            flask_rps = beside()
            run["adjacent_flask_rps"] = flask_rps
            run["ratio_to_adjacent_flask"] = round(run["rps"] / flask_rps, 4) if flask_rps else None
        runs.append(run)
    if beside is None:
        return median_run(runs, "rps", ("rps",))
    return median_run(runs, "ratio_to_adjacent_flask", ("rps", "adjacent_flask_rps", "ratio_to_adjacent_flask"))


def endpoints(issuer: str) -> dict:
    """The URLs every scenario targets, from the provider's own discovery document (idp and the peer
    name their endpoints differently)."""
    doc = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=HTTP_TIMEOUT)
    if doc.status_code != 200:
        raise BenchError(f"discovery at {issuer}: {doc.status_code}")
    meta = doc.json()
    missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri", "introspection_endpoint",
                           "userinfo_endpoint") if not meta.get(k)]
    if missing:
        raise BenchError(f"discovery at {issuer} lacks {', '.join(missing)}")
    return {"discovery": f"{issuer}/.well-known/openid-configuration", "authorize": meta["authorization_endpoint"],
            "token": meta["token_endpoint"], "jwks": meta["jwks_uri"],
            "introspection": meta["introspection_endpoint"], "userinfo": meta["userinfo_endpoint"]}


def wrk_plan(urls: dict, cc: dict, rp: dict, access_file: Path,
             refresh_files: list[Path]) -> list[tuple[str, str, str, list[dict]]]:
    """The same scenarios, scripts and order for idp and the peer, with the environment of each repeat:
    every repeat of the refresh scenario starts from refresh tokens of its own (none is sent twice)."""
    rp_auth = basic_auth(rp["client_id"], rp["client_secret"])
    repeats = len(refresh_files)
    return [
        ("GET discovery", urls["discovery"], "get.lua", [{}] * repeats),
        ("GET JWKS", urls["jwks"], "get.lua", [{}] * repeats),
        ("POST token client_credentials", urls["token"], "post_form.lua", [cc_wrk_env(cc)] * repeats),
        ("POST introspection", urls["introspection"], "introspect.lua",
         [{"BENCH_TOKENS_FILE": str(access_file), "BENCH_AUTH": rp_auth}] * repeats),
        ("GET UserInfo", urls["userinfo"], "userinfo.lua", [{"BENCH_TOKENS_FILE": str(access_file)}] * repeats),
        # Last: rotating a family may retire the access tokens the two scenarios above send.
        ("POST token refresh_token", urls["token"], "refresh.lua",
         [{"BENCH_TOKENS_FILE": str(f), "BENCH_AUTH": rp_auth} for f in refresh_files]),
    ]


def cc_wrk_env(cc: dict) -> dict:
    return {"BENCH_BODY": "grant_type=client_credentials", "BENCH_AUTH": basic_auth(cc["client_id"], cc["client_secret"])}


def write_token_files(workdir: Path, label: str, pool: list[dict], repeats: int) -> tuple[Path, list[Path]]:
    """The access tokens of the first share of the pool, and one refresh-token file per repeat."""
    share = len(pool) // repeats
    access_file = workdir / f"{label}_access_tokens.txt"
    access_file.write_text("\n".join(t["access_token"] for t in pool[:share]) + "\n")
    refresh_files = []
    for n in range(repeats):
        refresh_file = workdir / f"{label}_refresh_tokens_{n}.txt"
        refresh_file.write_text("\n".join(t["refresh_token"] for t in pool[n * share:(n + 1) * share]) + "\n")
        refresh_files.append(refresh_file)
    return access_file, refresh_files


# --------------------------------------------------------------------------------------------- argon2

# idp's own verify (idp.crypto.passwords, which lends argon2 its working memory from a pool) is the
# ceiling a sign-in is judged against; argon2-cffi's PasswordHasher, which maps fresh memory for
# every verify, is measured beside it to show what that pool is worth.
HASHERS = ("idp", "argon2-cffi")


def _verify_loop(seconds: float, hasher: str = "idp") -> tuple[int, float, float]:
    """Verifies for about `seconds`: (count, wall seconds, CPU seconds of this process)."""
    from argon2 import PasswordHasher

    from idp.crypto.passwords import Passwords
    from idp.settings import Settings

    s = Settings()
    if hasher == "idp":
        passwords = Passwords(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism,
                              s.password_hashes_at_once)
        digest = passwords.hash(PASSWORD)
        check = passwords.verify
    else:
        library = PasswordHasher(time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib,
                                 parallelism=s.argon2_parallelism)
        digest = library.hash(PASSWORD)
        check = library.verify
    count, started, cpu_started = 0, time.monotonic(), time.process_time()
    while time.monotonic() < started + seconds:
        if not check(digest, PASSWORD):
            raise BenchError(f"{hasher}: the right password did not verify")
        count += 1
    # Divided by the time the verifies took, not the time asked for: at a tenth of a second per
    # verify the last one ends well past the deadline.
    return count, time.monotonic() - started, time.process_time() - cpu_started


def argon2_parallel_rate(seconds: float, processes: int, hasher: str = "idp") -> float:
    """argon2id verify/s with idp.settings defaults, `processes` processes in parallel."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes) as pool:
        runs = list(pool.map(_verify_loop, [seconds] * processes, [hasher] * processes))
    return sum(n / w for n, w, _ in runs)


def argon2_rate(seconds: float, processes: int) -> dict:
    """argon2id verify/s with idp.settings defaults, by idp's verify and by argon2-cffi's: one process
    (with p > 1 its lanes run on several cores), then `processes` processes in parallel."""
    from idp.settings import Settings

    s = Settings()
    result: dict = {"time_cost": s.argon2_time_cost, "memory_kib": s.argon2_memory_kib,
                    "parallelism": s.argon2_parallelism, "parallel_processes": processes}
    for hasher in HASHERS:
        count, wall, cpu = _verify_loop(seconds, hasher)
        single = count / wall
        result[hasher] = {"verify_per_s_one_process": round(single, 1),
                          "verify_per_s_parallel": round(argon2_parallel_rate(seconds, processes, hasher), 1),
                          "ms_per_verify": round(1000 / single, 2) if single else None,
                          "cpu_ms_per_verify": round(1000 * cpu / count, 2) if count else None}
    return result


# --------------------------------------------------------------------------------------------- scenarios

def revocation_propagation(issuer: str, sessions: list[dict], admin: dict, rp: dict,
                           receiver: LogoutReceiver) -> dict:
    """End each session through the admin API; time until the RP's back-channel endpoint has the
    logout token, and until introspection of the session's access token says inactive."""
    token = requests.post(f"{issuer}/token", timeout=HTTP_TIMEOUT, auth=(admin["client_id"], admin["client_secret"]),
                          data={"grant_type": "client_credentials", "scope": "admin"})
    if token.status_code != 200:
        raise BenchError(f"admin token: {token.status_code} {token.text[:200]}")
    bearer = {"Authorization": "Bearer " + token.json()["access_token"]}
    delete_ms, logout_ms, inactive_ms, missing, errors = [], [], [], 0, 0
    http = requests.Session()
    for tokens in sessions:
        sid = jwt_claims(tokens["id_token"])["sid"]
        started = time.monotonic()
        response = http.delete(f"{issuer}/api/admin/sessions/{sid}", headers=bearer, timeout=HTTP_TIMEOUT)
        deleted = time.monotonic()
        if response.status_code != 204:
            errors += 1
            continue
        delete_ms.append((deleted - started) * 1000)
        deadline = started + 10
        while time.monotonic() < deadline:
            answer = http.post(f"{issuer}/introspect", auth=(rp["client_id"], rp["client_secret"]),
                               data={"token": tokens["access_token"], "token_type_hint": "access_token"},
                               timeout=HTTP_TIMEOUT)
            if answer.status_code == 200 and answer.json().get("active") is False:
                inactive_ms.append((time.monotonic() - started) * 1000)
                break
            time.sleep(0.002)
        else:
            errors += 1
        arrived = receiver.wait_for(sid, timeout=max(0.0, started + 30 - time.monotonic()))
        if arrived is None:
            missing += 1
        else:
            logout_ms.append((arrived - started) * 1000)

    def summary(values):
        return {"n": len(values), "p50_ms": _r(percentile(values, 50)), "p99_ms": _r(percentile(values, 99)),
                "max_ms": _r(max(values) if values else None)}

    return {"sessions": len(sessions), "errors": errors, "logout_token_missing_after_30s": missing,
            "admin_delete": summary(delete_ms), "backchannel_logout_received": summary(logout_ms),
            "introspection_inactive": summary(inactive_ms)}


def revocation_under_load(issuer: str, sessions: list[dict], admin: dict, rp: dict, receiver: LogoutReceiver,
                          load_url: str, load_env: dict, args) -> dict:
    """`revocation_propagation` while wrk keeps idp's workers busy with client_credentials grants (the
    heaviest scenario that stays valid whatever sessions end): a back-channel logout is sent by the
    worker that ended the session, sharing the CPUs with that load, as it would in a busy deployment."""
    seconds = max(args.duration, 3 + len(sessions))
    load: dict = {}

    def drive():
        try:
            load["wrk"] = run_wrk(load_url, "post_form.lua", args, load_env, duration=seconds)
        except BenchError as exc:
            load["error"] = str(exc)

    load_started = time.monotonic()
    driver = threading.Thread(target=drive, name="revocation-load", daemon=True)
    driver.start()
    time.sleep(1.0)  # wrk at full pace before the first session ends
    result = revocation_propagation(issuer, sessions, admin, rp, receiver)
    ended_within = time.monotonic() - load_started
    driver.join(seconds + 90)
    if "wrk" not in load:
        raise BenchError(f"the load beside the revocations failed: {load.get('error', 'wrk did not finish')}")
    wrk = load["wrk"]
    result["load"] = {"scenario": "POST token client_credentials", "seconds": seconds, "rps": wrk["rps"],
                      "p99_ms": wrk["p99_ms"], "errors": wrk["errors"],
                      "connections": args.connections,
                      # Sessions ended after wrk stopped were measured on an idle server.
                      "all_sessions_ended_under_load": ended_within <= seconds}
    return result


def _r(value):
    return None if value is None else round(value, 2)


# --------------------------------------------------------------------------------------------- CPU accounting

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_by_group(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by named groups of processes: each group is the given
    pids, or every process whose name is the group's name when the list is empty (PostgreSQL and Redis,
    which are not ours). A process that ended between two snapshots drops out; the sums are for judging
    who took the CPU, not accounting to the tick."""
    totals = {name: 0.0 for name in groups}
    by_name = {name for name, pids in groups.items() if not pids}
    wanted = {pid: name for name, pids in groups.items() for pid in pids}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        name = wanted.get(int(entry.name)) or next((g for g in by_name if comm.startswith(g)), None)
        if name:
            totals[name] += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return totals


# --------------------------------------------------------------------------------------------- sign-in with TOTP

def enroll_totp_users(deployment: Deployment, count: int) -> list[dict]:
    done = subprocess.run([sys.executable, str(BENCH_DIR / "totp_users.py"), str(count), PASSWORD],
                          env=deployment.env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if done.returncode != 0:
        raise BenchError(f"creating TOTP users failed: {done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["users"]


def signin_with_totp(urls: dict, issuer: str, rp: dict, users: list[dict], seconds: int, concurrency: int,
                     processes: int, server: Server, workdir: Path) -> dict:
    """The whole sign-in with TOTP, `concurrency` browsers at a time for about `seconds` (see
    bench/signin_load.py), in `processes` light client processes."""
    processes = max(1, min(processes, concurrency))
    common = {"issuer": issuer, "client_id": rp["client_id"], "client_secret": rp["client_secret"],
              "redirect_uri": REDIRECT_URI, "scope": SCOPE, "password": PASSWORD, "seconds": seconds,
              "authorize_path": urlsplit(urls["authorize"]).path, "token_path": urlsplit(urls["token"]).path}
    clients = []
    before = cpu_by_group({"idp workers": server.worker_pids(), "postgres": [], "redis-server": []})
    started = time.monotonic()
    for n in range(processes):
        cfg = {**common, "threads": concurrency // processes + (1 if n < concurrency % processes else 0),
               "users": users[n::processes]}  # each process its own users: no step is shared
        cfg_file = workdir / f"signin_load_{n}.json"
        cfg_file.write_text(json.dumps(cfg))
        clients.append(subprocess.Popen([sys.executable, str(BENCH_DIR / "signin_load.py"), str(cfg_file)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))
    outputs = []
    try:
        for proc in clients:
            out, err = proc.communicate(timeout=seconds + 120)
            if proc.returncode != 0:
                raise BenchError(f"sign-in load client failed: {err.strip()[-1500:]}")
            outputs.append(json.loads(out))
    except subprocess.TimeoutExpired:
        raise BenchError("the sign-in load client did not finish in time") from None
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    wall = time.monotonic() - started
    after = cpu_by_group({"idp workers": server.worker_pids(), "postgres": [], "redis-server": []})
    times = [t for o in outputs for t in o["times_ms"]]
    errors: dict[str, int] = {}
    for o in outputs:
        for reason, n in o["errors"].items():
            errors[reason] = errors.get(reason, 0) + n
    firsts = [o["first_started"] for o in outputs if o["first_started"]]
    lasts = [o["last_finished"] for o in outputs if o["last_finished"]]
    window = (max(lasts) - min(firsts)) if firsts and lasts else 0.0
    client_cpu = sum(o["cpu_s"] for o in outputs)
    return {
        "sessions": len(times), "window_s": round(window, 2),
        "sessions_per_s": round(len(times) / window, 2) if window else 0.0,
        "p50_ms": _r(percentile(times, 50)), "p90_ms": _r(percentile(times, 90)), "p99_ms": _r(percentile(times, 99)),
        "max_ms": _r(max(times) if times else None), "errors": sum(errors.values()), "error_detail": errors,
        "error_examples": [e for o in outputs for e in o["error_examples"]][:5],
        "users": len(users), "concurrency": concurrency, "client_processes": processes,
        "step_waits": sum(o["waits"] for o in outputs),
        "step_wait_seconds": round(sum(o["wait_seconds"] for o in outputs), 2),
        "cpu_s": {"load_client": round(client_cpu, 2),
                  **{name: round(after[name] - before[name], 2) for name in before}},
        "cpu_window_s": round(wall, 2),
        # Less sensitive to whatever else runs on the machine than sessions/s: what one sign-in costs idp.
        "idp_worker_cpu_ms_per_signin": round(1000 * (after["idp workers"] - before["idp workers"]) / len(times), 1)
        if times else None,
        "what": "authorize → login page → password POST → TOTP page → code POST (trust-device box unticked) → "
                "redirects → code exchange with PKCE; a new browser (connection, cookies) per sign-in, each "
                "user at most once per 30 s TOTP step",
    }


# --------------------------------------------------------------------------------------------- the peer

def peer_sign_in(urls: dict, client: dict) -> dict:
    """The peer's authorization code flow: authorize → the sign-in form in bench/peer/server.mjs →
    consent granted without a page → callback → code exchange with PKCE."""
    browser = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(12)
    # prompt=consent: OpenID Connect Core §11 grants offline_access (a refresh token) only with it, and
    # oidc-provider follows that; idp's first-party app gets it without.
    url = urls["authorize"] + "?" + urlencode({
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT_URI, "scope": SCOPE,
        "state": state, "nonce": secrets.token_urlsafe(12), "code_challenge": challenge,
        "code_challenge_method": "S256", "prompt": "consent"})
    response = browser.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    location = urljoin(url, response.headers.get("Location", ""))
    if response.status_code not in (302, 303) or "/interaction/" not in location:
        raise BenchError(f"peer authorize did not send to its sign-in: {response.status_code} {response.text[:200]}")
    response = browser.post(location + "/login", allow_redirects=False, timeout=HTTP_TIMEOUT,
                            data={"username": EMAIL, "password": PASSWORD})
    for _ in range(8):
        location = urljoin(url, response.headers.get("Location", ""))
        if response.status_code not in (302, 303):
            raise BenchError(f"peer sign-in stopped at {response.status_code}: {response.text[:200]}")
        if location.startswith(REDIRECT_URI):
            break
        response = browser.get(location, allow_redirects=False, timeout=HTTP_TIMEOUT)
    else:
        raise BenchError("peer sign-in never reached the redirect URI")
    params = parse_qs(urlsplit(location).query)
    if params.get("state") != [state] or "code" not in params:
        raise BenchError(f"bad peer callback: {location}")
    token = requests.post(urls["token"], timeout=HTTP_TIMEOUT, auth=(client["client_id"], client["client_secret"]),
                          data={"grant_type": "authorization_code", "code": params["code"][0],
                                "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    if token.status_code != 200 or "refresh_token" not in token.json():
        raise BenchError(f"peer code exchange failed: {token.status_code} {token.text[:200]}")
    return token.json()


def prepare_peer() -> str | None:
    """Installs bench/peer's pinned packages from the npm registry when node_modules is missing.
    Returns why the peer cannot run, or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed (the peer needs Node.js 20 or later)"
    if not (PEER_DIR / "node_modules" / "oidc-provider").is_dir():
        log("installing the peer's packages: npm ci in bench/peer")
        try:
            done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, capture_output=True,
                                  text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return "npm ci in bench/peer took more than 300 s"
        if done.returncode != 0:
            return f"npm ci in bench/peer failed: {(done.stderr or done.stdout).strip()[-500:]}"
    return None


def run_peer(args, deployment: Deployment, workdir: Path, servers: list[Server]) -> dict:
    """Starts oidc-provider (bench/peer/server.mjs) with the same kinds of clients, mints its tokens
    through its sign-in, and runs the same wrk scenarios against it."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    cc = {"client_id": "bench-machine", "client_secret": secrets.token_urlsafe(32)}
    rp = {"client_id": "bench-relying-app", "client_secret": secrets.token_urlsafe(32)}
    config = {
        "port": port, "workers": args.workers, "redis_url": REDIS_URL,
        # Under the run's own prefix, so Deployment.drop() removes the peer's keys with idp's.
        "redis_prefix": f"{deployment.redis_prefix}peer:",
        "user": {"id": "bench-user", "email": EMAIL, "password": PASSWORD, "name": "Bench User"},
        "clients": [
            {**cc, "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": []},
            {**rp, "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
             "redirect_uris": [REDIRECT_URI], "scope": SCOPE},
        ],
    }
    peer = Server("oidc-provider peer", ["node", str(PEER_DIR / "server.mjs")],
                  {**os.environ, "BENCH_PEER_CONFIG": json.dumps(config), "NODE_ENV": "production"},
                  workdir / "peer.log", issuer, "/.well-known/openid-configuration")
    servers.append(peer)
    log(f"starting the oidc-provider peer on {issuer} ({args.workers} processes, store in Redis)")
    peer.start()
    rss_idle = peer.rss()
    urls = endpoints(issuer)
    probe = requests.post(urls["token"], data={"grant_type": "client_credentials"},
                          headers={"Authorization": basic_auth(cc["client_id"], cc["client_secret"])},
                          timeout=HTTP_TIMEOUT)
    if probe.status_code != 200 or jwt_claims(probe.json()["access_token"]).get("iss") != issuer:
        raise BenchError(f"peer client_credentials probe failed: {probe.status_code} {probe.text[:200]}")
    pool_size = 2 * args.connections * args.repeat
    parallel = max(2, args.workers * args.threads)
    log(f"peer: signing in {pool_size} times through its sign-in form")
    with ThreadPoolExecutor(parallel) as pool:
        minted = list(pool.map(lambda _: peer_sign_in(urls, rp), range(pool_size)))
    access_file, refresh_files = write_token_files(workdir, "peer", minted, args.repeat)
    if args.warmup > 0:
        run_wrk(urls["discovery"], "get.lua", args, duration=args.warmup)
        run_wrk(urls["token"], "post_form.lua", args, cc_wrk_env(cc), duration=args.warmup)
    result = {"issuer": issuer, "version": peer_version(), "processes": args.workers, "store": "Redis",
              "rss_idle": rss_idle, "scenarios": {}}
    for name, url, script, envs in wrk_plan(urls, cc, rp, access_file, refresh_files):
        log(f"peer {name}: wrk {len(envs)} × {args.duration:g} s, {args.connections} connections")
        result["scenarios"][name] = measure(url, script, args, envs, peer.worker_pids())
    result["rss_after"] = peer.rss()
    peer.stop()
    return result


def peer_version() -> str | None:
    try:
        return json.loads((PEER_DIR / "node_modules" / "oidc-provider" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


# --------------------------------------------------------------------------------------------- output

def print_rows(rows: list[tuple[str, ...]]) -> None:
    """A table: the first row is the heading, the first column left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_cpu_per_request(results: dict) -> None:
    """Who used the CPU in each run, per request: what a ratio is made of."""
    rows = [("CPU µs per request", "server", "PostgreSQL", "Redis", "wrk", "peer server", "peer Redis")]
    peer_scenarios = results.get("peer", {}).get("scenarios", {})
    named = [*results["scenarios"].items(),
             *((f"reference: {label}", results["reference"][key]) for key, label in
               (("bare_flask_get", "bare Flask GET"), ("token_floor", "token floor")) if key in results["reference"])]
    for name, r in named:
        cpu = r.get("cpu_us_per_request")
        if not cpu:
            continue
        peer_cpu = (peer_scenarios.get(name) or {}).get("cpu_us_per_request") or {}
        rows.append((name, *(str(cpu[group]) for group in ("server", "postgres", "redis-server", "wrk")),
                     str(peer_cpu.get("server", "")), str(peer_cpu.get("redis-server", ""))))
    if len(rows) == 1:
        return
    print_rows(rows)


def _revocation_figures(r: dict) -> str:
    return (f"back-channel logout token at RP p50 {r['backchannel_logout_received']['p50_ms']} ms / "
            f"p99 {r['backchannel_logout_received']['p99_ms']} ms; introspection inactive p50 "
            f"{r['introspection_inactive']['p50_ms']} ms / p99 {r['introspection_inactive']['p99_ms']} ms; "
            f"admin DELETE p50 {r['admin_delete']['p50_ms']} ms; errors {r['errors']}, "
            f"missing tokens {r['logout_token_missing_after_30s']}")


def print_table(results: dict) -> None:
    peer = results.get("peer", {})
    peer_scenarios = peer.get("scenarios", {})
    rows = [("scenario", "req/s", "p50 ms", "p99 ms", "errors", "× bare Flask", "peer req/s", "peer p99", "peer err",
             "× peer")]
    for name, r in results["scenarios"].items():
        ratio = f"{r['ratio_to_bare_flask']:.3f}" if r.get("ratio_to_bare_flask") else "-"
        p = peer_scenarios.get(name)
        peer_cells = (f"{p['rps']:.1f}", f"{p['p99_ms']:.2f}", str(p["errors"]),
                      f"{r['rps'] / p['rps']:.3f}" if p["rps"] else "-") if p else ("-", "-", "-", "-")
        rows.append((name, f"{r['rps']:.1f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", str(r["errors"]), ratio,
                     *peer_cells))
    ref = results["reference"]["bare_flask_get"]
    rows.append(("reference: bare Flask GET", f"{ref['rps']:.1f}", f"{ref['p50_ms']:.2f}", f"{ref['p99_ms']:.2f}",
                 str(ref["errors"]), "1.000", "", "", "", ""))
    floor = results["reference"].get("token_floor")
    if floor:
        cc_peer = (peer.get("scenarios") or {}).get("POST token client_credentials")
        rows.append(("reference: token floor, no Flask", f"{floor['rps']:.1f}", f"{floor['p50_ms']:.2f}",
                     f"{floor['p99_ms']:.2f}", str(floor["errors"]), f"{floor['rps'] / ref['rps']:.3f}",
                     *((f"{cc_peer['rps']:.1f}", f"{cc_peer['p99_ms']:.2f}", str(cc_peer["errors"]),
                        f"{floor['rps'] / cc_peer['rps']:.3f}") if cc_peer else ("", "", "", ""))))
    print_rows(rows)
    print_cpu_per_request(results)
    if "skipped" in peer:
        print(f"\npeer: skipped ({peer['skipped']})")
    else:
        print(f"\npeer: oidc-provider {peer['version']}, {peer['processes']} Node.js processes (cluster), "
              f"tokens, grants and sessions in Redis; × peer = idp req/s ÷ peer req/s")
    print("× bare Flask: each idp run divided by a bare-Flask run right after it (the run with the median ratio "
          "stands); the bare Flask row is the reference's own runs after the sign-in")
    if floor:
        print("token floor: client_credentials as one plain WSGI function (form, keyed-SHA-256 secret check, ES256 "
              "JWT, one Redis SET; bench/reference_app.py): the most a token endpoint on this stack can do")
    a = results["reference"]["argon2"]
    for hasher in HASHERS:
        h = a[hasher]
        print(f"argon2id m={a['memory_kib']} KiB t={a['time_cost']} p={a['parallelism']}, {hasher}'s verify: "
              f"{h['verify_per_s_one_process']:.1f} verify/s in one process ({h['ms_per_verify']} ms wall, "
              f"{h['cpu_ms_per_verify']} ms CPU), "
              f"{h['verify_per_s_parallel']:.1f}/s with {a['parallel_processes']} processes")
    t = results.get("signin_totp")
    if t and not t["sessions"]:
        print(f"sign-in with TOTP: no sign-in finished; errors {t['error_detail']} {t['error_examples']}")
    elif t:
        cpu = t["cpu_s"]
        print(f"sign-in with TOTP (authorize → password → TOTP → code exchange; {t['concurrency']} at a time, "
              f"{t['users']} users): {t['sessions_per_s']:.1f} sessions/s over {t['sessions']} sessions in "
              f"{t['window_s']:.1f} s, p50 {t['p50_ms']:.0f} ms / p99 {t['p99_ms']:.0f} ms, errors {t['errors']}"
              f"{' ' + str(t['error_detail']) if t['errors'] else ''}; "
              f"{t['ratio_to_argon2_parallel']:.2f} × idp's parallel verify rate measured before and after it "
              f"({t['argon2_adjacent_verify_per_s']}/s, the mean of {t['argon2_verify_per_s_before_after']}; "
              f"target ≥ 0.8), {t['ratio_to_argon2_cffi_parallel']:.2f} × "
              f"argon2-cffi's ({t['argon2_cffi_adjacent_verify_per_s']}/s)"
              + (f"; median of runs at {t['runs_ratio_to_argon2_parallel']} × ({t['runs_sessions_per_s']} sessions/s)"
                 if "runs_sessions_per_s" in t else ""))
        print(f"  CPU seconds in those {t['cpu_window_s']:.1f} s: load client {cpu['load_client']} "
              f"({t['client_processes']} processes), idp workers {cpu['idp workers']}, PostgreSQL {cpu['postgres']}, "
              f"Redis {cpu['redis-server']}; waits for a new TOTP step: {t['step_waits']}")
        print(f"  idp worker CPU per sign-in: {t['idp_worker_cpu_ms_per_signin']} ms "
              f"(one verify: {a['idp']['cpu_ms_per_verify']} ms CPU by idp, "
              f"{a['argon2-cffi']['cpu_ms_per_verify']} ms by argon2-cffi)")
    rv = results.get("revocation_propagation")
    if rv:
        print(f"revocation ({rv['sessions']} sessions ended one at a time via DELETE /api/admin/sessions/{{sid}}): "
              f"{_revocation_figures(rv)}")
    rl = results.get("revocation_propagation_under_load")
    if rl:
        load = rl["load"]
        print(f"  the same under load ({rl['sessions']} more sessions, while wrk sent {load['rps']:.0f} "
              f"client_credentials grants/s on {load['connections']} connections, p99 {load['p99_ms']} ms, "
              f"errors {load['errors']}"
              f"{'' if load['all_sessions_ended_under_load'] else '; some sessions ended after the load stopped'}): "
              f"{_revocation_figures(rl)}")
    rss = results["rss"]
    peer_rss = f", peer {peer['rss_after']['workers_mib']}" if "rss_after" in peer else ""
    print(f"worker RSS after load (MiB): idp {rss['idp_after']['workers_mib']} (idle "
          f"{rss['idp_idle']['workers_mib']}), bare Flask {rss['reference_after']['workers_mib']}{peer_rss}")
    if t and "rss_right_after" in t:
        print(f"  idp right at the end of the sign-in load {t['rss_right_after']['workers_mib']} (argon2 memory kept "
              f"for the next check), {rss['idp_after_signin']['workers_mib']} once the sign-ins and the argon2 "
              f"references after them were over")
    print(f"refresh_token rotation: {results['scenarios']['POST token refresh_token']['method']}")
    m = results["machine"]
    print(f"load average (1, 5, 15 min) at start {m['loadavg_at_start']}, at end {m['loadavg_at_end']} "
          f"on {m['cpus']} CPUs: anything besides this run skews every figure")
    print(f"\nresults: {results['results_file']}")


# --------------------------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Load benchmark of idp (see bench/README.md).")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk scenario (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for idp and the reference app")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (idp serve default 4)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--wrk-timeout", type=int, default=5, help="wrk request timeout in seconds (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up load before measuring")
    parser.add_argument("--repeat", type=int, default=1,
                        help="wrk runs per scenario; the median by req/s is reported (default 1)")
    parser.add_argument("--sessions", type=int, default=20,
                        help="sign-ins ended for the revocation-propagation scenario (0 skips it)")
    parser.add_argument("--signin-concurrency", type=int, default=0,
                        help="sign-ins with TOTP in flight at once (default: workers × threads)")
    parser.add_argument("--signin-processes", type=int, default=2,
                        help="load-client processes for the sign-in with TOTP (default 2)")
    parser.add_argument("--signin-users", type=int, default=0,
                        help="users with TOTP to sign in (default: enough that none waits for a new TOTP step)")
    parser.add_argument("--no-peer", action="store_true", help="skip the oidc-provider peer (bench/peer)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep server logs and the instance folder")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.connections < 1 or args.workers < 1:
        parser.error("need 0 < --duration <= 600, --connections >= 1, --workers >= 1")
    if not 1 <= args.repeat <= 9:
        parser.error("need 1 <= --repeat <= 9")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed. On Debian/Ubuntu:\n\n    apt-get install -y wrk\n", file=sys.stderr)
        return 2
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]

    # SIGTERM takes the same way out as Ctrl-C, through every finally below.
    def interrupted(*_):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupted)

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp.lower()}_{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix="idp-bench-"))
    deployment = Deployment(run_id, workdir)
    receiver = LogoutReceiver()
    servers: list[Server] = []
    results: dict = {
        "started_at": stamp,
        "settings": {"duration_s": args.duration, "connections": args.connections, "workers": args.workers,
                     "threads": args.threads, "wrk_threads": args.wrk_threads, "warmup_s": args.warmup,
                     "repeat": args.repeat},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "wrk": wrk_version[0] if wrk_version else None,
                    "note": "wrk, idp, PostgreSQL and Redis share this machine's CPUs",
                    # Anything else running on the machine skews every figure; the load average shows it.
                    "loadavg_at_start": [round(v, 2) for v in os.getloadavg()]},
        "scenarios": {},
    }
    ok = False
    try:
        deployment.create_database()
        receiver.start()
        log(f"database {deployment.db_name}, redis prefix {deployment.redis_prefix}, workdir {workdir}")
        deployment.cli("init")
        deployment.cli("users", "create", "--email", EMAIL, "--password", PASSWORD, "--name", "Bench User")
        cc = deployment.cli("clients", "create", "--name", "bench machine client",
                            "--grant-type", "client_credentials", "--scope", "openid")
        rp = deployment.cli("clients", "create", "--name", "bench relying app", "--first-party",
                            "--redirect-uri", REDIRECT_URI, "--grant-type", "authorization_code",
                            "--grant-type", "refresh_token", "--scope", SCOPE,
                            "--backchannel-logout-uri", receiver.url)
        admin = deployment.cli("clients", "create", "--name", "bench admin", "--grant-type", "client_credentials",
                               "--scope", "admin")

        idp = Server("idp serve", [IDP, "serve", "--host", "127.0.0.1", "--port", str(deployment.port),
                                   "--workers", str(args.workers), "--threads", str(args.threads)],
                     deployment.env, workdir / "idp-serve.log", deployment.issuer, "/.well-known/openid-configuration")
        servers.append(idp)
        log(f"starting idp serve on {deployment.issuer} ({args.workers} workers × {args.threads} threads)")
        idp.start()
        idp.wait_for_workers(args.workers)
        rss_idle = idp.rss()

        # Refresh chains (one per connection plus as many spares), tokens for UserInfo / introspection,
        # and the sessions the revocation scenario ends, all through the hosted sign-in form.
        pool_size = 2 * args.connections * args.repeat
        parallel = max(2, args.workers * args.threads)
        # The revocation scenario ends `sessions` of them on an idle server and as many under load.
        log(f"signing in {pool_size + 2 * args.sessions} times through the hosted form ({parallel} in parallel)")
        minted, seconds = mint(deployment.issuer, rp, pool_size + 2 * args.sessions, parallel)
        signin_times = [t["_seconds"] * 1000 for t in minted]
        results["signin_premint"] = {
            "sessions": len(minted), "seconds": round(seconds, 2), "parallel": parallel,
            "sessions_per_s": round(len(minted) / seconds, 2), "p50_ms": _r(percentile(signin_times, 50)),
            "p99_ms": _r(percentile(signin_times, 99)),
            "what": "authorize → login page → password POST → redirects → code exchange; no second factor",
        }
        pool = minted[:pool_size]
        revocation_sessions = minted[pool_size:pool_size + args.sessions]
        loaded_revocation_sessions = minted[pool_size + args.sessions:]
        access_file, refresh_files = write_token_files(workdir, "idp", pool, args.repeat)
        urls = endpoints(deployment.issuer)

        probe = requests.post(urls["token"], data={"grant_type": "client_credentials"},
                              headers={"Authorization": basic_auth(cc["client_id"], cc["client_secret"])},
                              timeout=HTTP_TIMEOUT)
        if probe.status_code != 200:
            raise BenchError(f"client_credentials probe failed: {probe.status_code} {probe.text[:200]}")

        # The bare-Flask reference runs beside idp, idle while idp is measured, so that each scenario run
        # can be followed by a reference run (see `measure`).
        ref_port = free_port()
        floor = {"client_id": "floor-machine", "client_secret": secrets.token_urlsafe(32)}
        reference = Server("bare Flask reference", [sys.executable, str(BENCH_DIR / "reference_app.py"), "--port",
                                                     str(ref_port), "--workers", str(args.workers), "--threads",
                                                     str(args.threads), "--redis-url", REDIS_URL, "--redis-prefix",
                                                     f"{deployment.redis_prefix}floor:", "--client-id",
                                                     floor["client_id"]],
                           {**os.environ, "BENCH_FLOOR_SECRET": floor["client_secret"]}, workdir / "reference.log",
                           f"http://127.0.0.1:{ref_port}", "/.well-known/openid-configuration")
        servers.append(reference)
        reference.start()
        reference.wait_for_workers(args.workers)
        flask_url = reference.base_url + "/.well-known/openid-configuration"

        if args.warmup > 0:
            log(f"warm-up {args.warmup:g} s")
            run_wrk(urls["discovery"], "get.lua", args, duration=args.warmup)
            run_wrk(urls["token"], "post_form.lua", args, cc_wrk_env(cc), duration=args.warmup)
            run_wrk(flask_url, "get.lua", args, duration=args.warmup)

        def flask_beside() -> float:
            return run_wrk(flask_url, "get.lua", args)["rps"]

        for name, url, script, envs in wrk_plan(urls, cc, rp, access_file, refresh_files):
            log(f"{name}: wrk {len(envs)} × {args.duration:g} s, {args.connections} connections, "
                f"each followed by the bare Flask reference")
            results["scenarios"][name] = measure(url, script, args, envs, idp.worker_pids(), beside=flask_beside)
        results["scenarios"]["POST token refresh_token"]["method"] = (
            f"wrk + bench/wrk/refresh.lua: {args.connections} pre-minted refresh tokens start one rotation chain "
            f"per connection ({args.connections} spares replace broken chains); each request sends the token "
            f"the previous answer returned, none is sent twice")
        results["rss"] = {"idp_idle": rss_idle, "idp_after": idp.rss()}

        if args.sessions > 0:
            log(f"revocation propagation: ending {len(revocation_sessions)} sessions one at a time")
            results["revocation_propagation"] = revocation_propagation(deployment.issuer, revocation_sessions,
                                                                       admin, rp, receiver)
            log(f"revocation propagation under load: ending {len(loaded_revocation_sessions)} sessions one at a "
                f"time while wrk sends client_credentials grants on {args.connections} connections")
            results["revocation_propagation_under_load"] = revocation_under_load(
                deployment.issuer, loaded_revocation_sessions, admin, rp, receiver, urls["token"], cc_wrk_env(cc), args)

        # The whole sign-in with TOTP. Each user signs in at most once per 30 s step, so there must be
        # about as many users as sign-ins in one step: the password-only rate above bounds that rate.
        # Each repeat gets users of its own, so no run waits for a step another one used.
        concurrency = args.signin_concurrency or args.workers * args.threads
        users_per_run = args.signin_users or min(5000, max(200, math.ceil(
            1.5 * results["signin_premint"]["sessions_per_s"] * min(args.duration, 30)) + 2 * concurrency))
        log(f"creating {users_per_run * args.repeat} users with TOTP enrolled")
        totp_users = enroll_totp_users(deployment, users_per_run * args.repeat)
        signin_runs = []
        cpus = max(1, os.cpu_count() or 1)
        reference_seconds = min(6.0, args.duration)
        for n in range(args.repeat):
            log(f"sign-in with TOTP ({n + 1}/{args.repeat}): {concurrency} at a time for {args.duration:g} s "
                f"({args.signin_processes} client processes), with idp's argon2 rate before and after it")
            idp_rate_before = argon2_parallel_rate(reference_seconds, cpus, "idp")
            run = signin_with_totp(urls, deployment.issuer, rp, totp_users[n * users_per_run:(n + 1) * users_per_run],
                                   args.duration, concurrency, args.signin_processes, idp, workdir)
            # idp keeps argon2's working memory between checks while sign-ins keep coming: this is
            # what the workers hold at the end of the load, before the pool lets it go.
            run["rss_right_after"] = idp.rss()
            # The ceiling is measured on either side of each run, idp idle, and the run is judged
            # against their mean: on this shared VM the argon2 rate itself moves by a tenth from one
            # minute to the next, and a reference taken at the end of the whole run judged every
            # sign-in run against another minute's machine. argon2-cffi's, for comparison, after it.
            idp_rate_after = argon2_parallel_rate(reference_seconds, cpus, "idp")
            run["argon2_verify_per_s_before_after"] = [round(idp_rate_before, 1), round(idp_rate_after, 1)]
            rates = {"": (idp_rate_before + idp_rate_after) / 2,
                     "_cffi": argon2_parallel_rate(reference_seconds, cpus, "argon2-cffi")}
            for suffix, adjacent in rates.items():
                run[f"argon2{suffix}_adjacent_verify_per_s"] = round(adjacent, 1)
                run[f"ratio_to_argon2{suffix}_parallel"] = (round(run["sessions_per_s"] / adjacent, 4)
                                                            if adjacent else None)
            signin_runs.append(run)
        # As for the wrk scenarios: the run with the median ratio stands for the scenario.
        results["signin_totp"] = median_run(signin_runs, "ratio_to_argon2_parallel",
                                            ("sessions_per_s", "ratio_to_argon2_parallel",
                                             "ratio_to_argon2_cffi_parallel"))
        results["rss"]["idp_after_signin"] = idp.rss()
        idp.stop()

        # The reference was warmed up before the scenarios and has run after each of them since.
        log("bare Flask reference app and the token floor under the same gunicorn settings")
        results["reference"] = {"bare_flask_get": measure(flask_url, "get.lua", args, [{}] * args.repeat,
                                                          reference.worker_pids())}
        log("token floor: client_credentials as one plain WSGI function")
        results["reference"]["token_floor"] = measure(reference.base_url + "/token", "post_form.lua", args,
                                                      [cc_wrk_env(floor)] * args.repeat, reference.worker_pids())
        results["rss"]["reference_after"] = reference.rss()
        reference.stop()

        if args.no_peer:
            results["peer"] = {"skipped": "--no-peer"}
        else:
            reason = prepare_peer()
            if reason is None:
                try:
                    results["peer"] = run_peer(args, deployment, workdir, servers)
                except BenchError as exc:
                    reason = f"the peer failed: {exc}"
            if reason is not None:
                log(f"peer skipped: {reason}")
                results["peer"] = {"skipped": reason}

        log("argon2 verify rate")
        results["reference"]["argon2"] = argon2_rate(min(6.0, args.duration), max(1, os.cpu_count() or 1))

        flask_rps = results["reference"]["bare_flask_get"]["rps"]
        peer_scenarios = results["peer"].get("scenarios", {})
        for name, r in results["scenarios"].items():
            # The ratio to the reference run right after it; the end-of-run reference's stays beside it.
            r["ratio_to_end_flask"] = round(r["rps"] / flask_rps, 4) if flask_rps else None
            r["ratio_to_bare_flask"] = r.get("ratio_to_adjacent_flask", r["ratio_to_end_flask"])
            peer_rps = peer_scenarios.get(name, {}).get("rps")
            r["ratio_to_peer"] = round(r["rps"] / peer_rps, 4) if peer_rps else None
        argon2_parallel = results["reference"]["argon2"]["idp"]["verify_per_s_parallel"]
        results["signin_premint"]["ratio_to_argon2_parallel"] = (
            round(results["signin_premint"]["sessions_per_s"] / argon2_parallel, 4) if argon2_parallel else None)
        results["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
        write_results(results, f"{stamp}.json")
        print_table(results)
        ok = True
        return 0
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as exc:  # keep cleaning up
                log(f"stopping {server.name}: {exc}")
        tear_down(receiver, deployment, workdir, keep=args.keep_workdir or not ok)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
