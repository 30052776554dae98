"""The access log of `idp serve` writes gunicorn's own line, except for the secrets some addresses carry."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from idp.server import gunicorn_options
from idp.web.access_log import REDACTED, AccessLog, redact

SECRET = "Qm9ndXMtYnV0LWxvbmctc2luZ2xlLXVzZS1saW5rLXRva2Vu"


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines():
    """What gunicorn's access logger writes, for the length of a test."""
    access = logging.getLogger("gunicorn.access")
    kept = access.handlers[:]
    sink = _Lines()
    yield access, sink
    access.handlers = kept


@pytest.fixture
def loggers(monkeypatch, access_lines):
    """gunicorn's logger and idp's, both writing into one list; the clock fixed for both."""
    monkeypatch.setattr(Logger, "now", lambda self: "[06/Dec/2026:20:15:00 +0000]")
    access, sink = access_lines

    def write(access_format=None, **request):
        lines = []
        for cls in (Logger, AccessLog):
            cfg = Config()
            cfg.set("accesslog", "-")
            if access_format:
                cfg.set("access_log_format", access_format)
            logger = cls(cfg)  # its set-up replaces the handlers
            access.handlers = [sink]
            logger.access(*_request(**request))
            lines.append(sink.lines.pop())
        return tuple(lines)

    return write


def _request(method="GET", uri="/.well-known/openid-configuration", status="200 OK", sent=312, headers=(),
             response_headers=(("Content-Type", "application/json"), ("Content-Length", "312")), **environ):
    env = {"REQUEST_METHOD": method, "RAW_URI": uri, "PATH_INFO": uri.partition("?")[0],
           "QUERY_STRING": uri.partition("?")[2], "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
           "REMOTE_PORT": "51234", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "wsgi.url_scheme": "http"}
    req_headers = list(headers)
    for name, value in req_headers:
        key = name.upper().replace("-", "_")
        env[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    env.update(environ)
    resp = SimpleNamespace(status=status, sent=sent, headers=list(response_headers))
    req = SimpleNamespace(headers=[(n.upper(), v) for n, v in req_headers])
    return resp, req, env, dt.timedelta(seconds=1, microseconds=234567)


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.mark.parametrize("request_", [
    {},
    {"method": "POST", "uri": "/token", "headers": [("Authorization", _basic("machine-7", "s3cret")),
                                                   ("Content-Type", "application/x-www-form-urlencoded")]},
    {"uri": "/login?next=%2Fauthorize%3Fclient_id%3Dapp", "headers": [
        ("User-Agent", 'Mozilla/5.0 "quoted" (X11)'), ("Referer", "https://app.example/start?x=1")]},
    {"uri": "/authorize?response_type=code&code_challenge=abc&state=xyz", "status": "302 FOUND", "sent": 0},
    {"status": "500 INTERNAL SERVER ERROR", "sent": None},
    {"headers": [("Authorization", "Basic not-base64!")]},
    {"uri": "/userinfo", "headers": [("Authorization", "Bearer eyJhbGciOi.x.y")]},
])
def test_the_default_line_is_gunicorns(loggers, request_):
    theirs, ours = loggers(**request_)
    assert ours == theirs


CUSTOM_FORMAT = ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s %(B)s %(m)s %(U)s %(q)s %(H)s %(T)s %(D)s %(M)s %(L)s '
                 '%(p)s "%({user-agent}i)s" %({Content-Type}o)s %({remote_port}e)s %({x-missing}i)s %(zz)s')


def test_any_other_format_is_gunicorns_too(loggers):
    theirs, ours = loggers(CUSTOM_FORMAT, uri="/authorize?client_id=app&state=1",
                           headers=[("User-Agent", 'curl "8"')])
    assert ours == theirs
    assert ' - - [06/Dec/2026' in ours and ' "curl \\"8\\"" application/json 51234 - -' in ours


@pytest.mark.parametrize("path", ["/invite/", "/unlock/", "/account/sessions/end-link/"])
def test_emailed_link_tokens_are_not_written(loggers, path):
    uri = f"{path}{SECRET}"
    theirs, ours = loggers(CUSTOM_FORMAT.replace("%(zz)s", "%({raw_uri}e)s %({referer}i)s"),
                           method="POST", uri=uri, headers=[("Referer", f"https://idp.example{uri}")])
    assert SECRET in theirs
    assert SECRET not in ours
    assert ours == theirs.replace(SECRET, REDACTED)
    default_theirs, default_ours = loggers(uri=uri, headers=[("Referer", f"https://idp.example{uri}?a=b")])
    assert default_ours == default_theirs.replace(SECRET, REDACTED)
    assert f'"GET {path}{REDACTED} HTTP/1.1"' in default_ours


@pytest.mark.parametrize("parameter", ["id_token_hint", "access_token", "client_secret", "code", "token",
                                       "refresh_token", "password"])
def test_secret_parameters_are_not_written(loggers, parameter):
    uri = f"/logout?state=s1&{parameter}={SECRET}&post_logout_redirect_uri=https%3A%2F%2Fapp%2Fbye"
    theirs, ours = loggers(uri=uri)
    assert ours == theirs.replace(SECRET, REDACTED)
    assert "state=s1&" in ours and "post_logout_redirect_uri=https%3A%2F%2Fapp%2Fbye" in ours


def test_lookalike_names_are_left_alone():
    kept = "/authorize?code_challenge=abc&response_type=code&tokens=1&invite=x&my_code=2"
    assert redact(kept) == kept
    assert redact("/invitee/abc /unlocked/abc") == "/invitee/abc /unlocked/abc"
    assert redact("/invite/abc?code=1#x") == f"/invite/{REDACTED}?code={REDACTED}#x"


def test_no_access_log_means_no_line(access_lines):
    access, sink = access_lines
    logger = AccessLog(Config())  # accesslog unset
    access.handlers = [sink]
    logger.access(*_request())
    assert sink.lines == []


def test_idp_serve_uses_it():
    assert gunicorn_options("127.0.0.1", 8000, 2, 4)["logger_class"] is AccessLog
