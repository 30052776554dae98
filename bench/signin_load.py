"""Load generator for the whole sign-in with TOTP, started by bench/run.py (a few of these processes).

Reads one JSON object from the file named by its argument: issuer, client_id, client_secret, redirect_uri, scope, password,
threads, seconds, users [{email, totp_secret, last_step}]. Each thread plays one browser after
another for `seconds`: authorize → login page → password POST → TOTP page → code POST (the "trust
this device" box left unticked) → redirects → the relying app's code exchange with PKCE. Prints one
JSON object: per-sign-in times, errors by reason, and this process's own CPU time.

Deliberately light, because it shares two CPUs with the server, PostgreSQL and Redis: the standard
library's http.client with a hand-kept cookie jar instead of requests, one keep-alive connection per
browser (a new browser opens a new one) and one per thread for the relying app's back channel.

A TOTP code is accepted once per user and time step (a replay is refused), so a user is signed in at
most once per 30-second step: users wait in a queue ordered by the step they last used, and a thread
that finds the head of the queue not yet usable waits for the next step (reported as waits).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import http.client
import json
import re
import resource
import secrets
import sys
import threading
import time
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pyotp

PERIOD = 30
TIMEOUT = 30
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NEXT = re.compile(r'name="next" value="([^"]*)"')
METHOD = re.compile(r'name="method" value="([^"]*)"')


class Failed(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class Browser:
    """One browser: a connection to the issuer and its cookies (all host-only, Path=/)."""

    def __init__(self, host: str, port: int):
        self.conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, target: str, form: dict | None = None) -> tuple[int, dict, str]:
        headers = {"User-Agent": "idp-bench/1 (signin_load.py)"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, target, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        for raw in response.msg.get_all("Set-Cookie") or []:
            self._remember(raw)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text

    def _remember(self, raw: str) -> None:
        first, *attributes = raw.split(";")
        name, _, value = first.strip().partition("=")
        gone = any(a.strip().lower() in ("max-age=0",) or "1970" in a for a in attributes)
        if gone:
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = value

    def close(self) -> None:
        self.conn.close()


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def sign_in(cfg: dict, user: dict, backchannel: http.client.HTTPConnection) -> int:
    """One whole sign-in. Returns the TOTP time step it used; raises Failed."""
    issuer = urlsplit(cfg["issuer"])
    browser = Browser(issuer.hostname, issuer.port)
    try:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(12)
        url = cfg["authorize_path"] + "?" + urlencode({
            "response_type": "code", "client_id": cfg["client_id"], "redirect_uri": cfg["redirect_uri"],
            "scope": cfg["scope"], "state": state, "nonce": secrets.token_urlsafe(12),
            "code_challenge": challenge, "code_challenge_method": "S256"})
        status, headers, _ = browser.request("GET", url)
        if status not in (302, 303) or "/login" not in headers.get("location", ""):
            raise Failed("authorize", f"{status}")
        login_url = path_of(urljoin(url, headers["location"]))
        status, _, page = browser.request("GET", login_url)
        csrf, nxt = CSRF.search(page), NEXT.search(page)
        if status != 200 or not (csrf and nxt):
            raise Failed("login_page", f"{status}")
        status, headers, _ = browser.request("POST", login_url.split("?")[0], {
            "csrf_token": csrf.group(1), "next": nxt.group(1), "username": user["email"],
            "password": cfg["password"]})
        if status not in (302, 303) or "/login/2fa" not in headers.get("location", ""):
            raise Failed("password", f"{status}")
        factor_url = path_of(urljoin(login_url, headers["location"]))
        status, _, page = browser.request("GET", factor_url)
        csrf, method = CSRF.search(page), METHOD.search(page)
        if status != 200 or not csrf or not method or method.group(1) != "totp":
            raise Failed("totp_page", f"{status} {method.group(1) if method else None}")
        when = time.time()
        step = int(when // PERIOD)
        code = pyotp.TOTP(user["totp_secret"], interval=PERIOD).at(when)
        # "Trust this device" stays unticked: every sign-in is a new browser that asks for the code.
        status, headers, _ = browser.request("POST", factor_url.split("?")[0], {
            "csrf_token": csrf.group(1), "method": "totp", "code": code})
        location = headers.get("location", "")
        if status not in (302, 303) or not location or "/login" in urlsplit(location).path:
            raise Failed("totp", f"{status} {location[:60]}")
        for _hop in range(6):
            if location.startswith(cfg["redirect_uri"]):
                break
            status, headers, _page = browser.request("GET", path_of(urljoin(cfg["issuer"] + "/", location)))
            location = headers.get("location", "")
            if status not in (302, 303) or not location:
                raise Failed("redirects", f"{status}")
        else:
            raise Failed("redirects", "never reached the redirect URI")
        params = parse_qs(urlsplit(location).query)
        if params.get("state") != [state] or "code" not in params:
            raise Failed("callback", location[:100])
        auth = base64.b64encode(f"{cfg['client_id']}:{cfg['client_secret']}".encode()).decode()
        backchannel.request("POST", cfg["token_path"], body=urlencode({
            "grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": cfg["redirect_uri"],
            "code_verifier": verifier}), headers={"Authorization": "Basic " + auth,
                                                  "Content-Type": "application/x-www-form-urlencoded"})
        answer = backchannel.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise Failed("code_exchange", f"{answer.status}")
        # The ID token must say a one-time code was proven: the TOTP step really ran.
        payload = json.loads(body)["id_token"].split(".")[1]
        amr = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("amr", [])
        if "otp" not in amr:
            raise Failed("amr", f"{amr}")
        return step
    finally:
        browser.close()


def main() -> int:
    with open(sys.argv[1]) as fh:
        cfg = json.load(fh)
    issuer = urlsplit(cfg["issuer"])
    queue = collections.deque(sorted(cfg["users"], key=lambda u: u["last_step"]))
    lock = threading.Lock()
    times_ms: list[float] = []
    errors: collections.Counter = collections.Counter()
    details: list[str] = []
    waits = [0, 0.0]  # count, seconds
    deadline = time.monotonic() + cfg["seconds"]
    first_started, last_finished = [None], [None]

    def take_user():
        while True:
            with lock:
                step = int(time.time() // PERIOD)
                if queue and queue[0]["last_step"] < step:
                    return queue.popleft()
            # Every user has used this step: wait for the next one (counted, so the reader sees it).
            pause = PERIOD - time.time() % PERIOD + 0.05
            if time.monotonic() + pause > deadline:
                return None
            with lock:
                waits[0] += 1
                waits[1] += pause
            time.sleep(pause)

    def worker():
        backchannel = http.client.HTTPConnection(issuer.hostname, issuer.port, timeout=TIMEOUT)
        while time.monotonic() < deadline:
            user = take_user()
            if user is None:
                break
            started = time.monotonic()
            with lock:
                if first_started[0] is None:
                    first_started[0] = time.time()
            try:
                user["last_step"] = sign_in(cfg, user, backchannel)
                elapsed = time.monotonic() - started
                with lock:
                    times_ms.append(elapsed * 1000)
            except Failed as failed:
                with lock:
                    errors[failed.reason] += 1
                    if len(details) < 5:
                        details.append(f"{failed.reason}: {failed.detail}")
                # A code may have been used up even when a later step failed.
                user["last_step"] = int(time.time() // PERIOD)
            except (OSError, http.client.HTTPException) as exc:
                backchannel.close()
                backchannel = http.client.HTTPConnection(issuer.hostname, issuer.port, timeout=TIMEOUT)
                with lock:
                    errors["socket"] += 1
                    if len(details) < 5:
                        details.append(f"socket: {exc!r}")
                user["last_step"] = int(time.time() // PERIOD)
            with lock:
                last_finished[0] = time.time()
                queue.append(user)
        backchannel.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(cfg["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(cfg["seconds"] + 2 * TIMEOUT)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    json.dump({
        "times_ms": times_ms, "errors": dict(errors), "error_examples": details,
        "waits": waits[0], "wait_seconds": round(waits[1], 2),
        # Wall-clock times, so run.py can take the window over all processes.
        "first_started": first_started[0], "last_finished": last_finished[0],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
    }, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
