"""The access log of `idp serve`: gunicorn's line, without the secrets some addresses carry, built
from only the values its format names.

Some of idp's addresses are bearer secrets: the emailed single-use links (`/invite/<token>` sets an
invited account's password and signs it in, `/unlock/<token>`, `/account/sessions/end-link/<token>`)
and a few query parameters apps may send (`id_token_hint` on logout; an access token or client
secret sent where it does not belong). gunicorn writes the request line and the Referer as they came,
so anyone who can read the server's output could use an invitation before the invited person does.
Those parts are written as `[redacted]`; the rest of the line is exactly gunicorn's.

gunicorn gathers every request header, response header and WSGI environ entry into a dict for each
line and escapes them all: 38–52 µs a request here, an eighth of a bare Flask request, for a format
(the default) that uses nine values. Here they are computed when the format asks for them, 15 µs a
line in all; any other value a format names comes from gunicorn's own gathering, redacted the same way.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping

from gunicorn.glogging import Logger

REDACTED = "[redacted]"

_SECRET_PATH = re.compile(r"(/(?:invite|unlock|account/sessions/end-link)/)[^/?#\s\"]+")
_SECRET_PARAMETER = re.compile(
    r"([?&](?:access_token|refresh_token|id_token|id_token_hint|logout_token|code|client_secret|client_assertion"
    r"|token|password|request)=)[^&#\s\"]*"
)


def redact(text: str) -> str:
    """`text` (a request line, a URL, a path or a query) with the secrets listed above replaced."""
    if "/" in text:
        text = _SECRET_PATH.sub(r"\g<1>" + REDACTED, text)
    if "=" in text:
        text = _SECRET_PARAMETER.sub(r"\g<1>" + REDACTED, text)
    return text


class AccessLog(Logger):
    """gunicorn's logger (`logger_class`) with the access line above; errors are logged as before."""

    def access(self, resp, req, environ, request_time):
        if not self._writes_access_lines():
            return
        try:
            self.access_log.info(self.cfg.access_log_format, _LineValues(self, resp, req, environ, request_time))
        except Exception:
            self.error(traceback.format_exc())

    def _writes_access_lines(self) -> bool:
        try:
            return self.access_log_enabled  # newer gunicorn releases work it out once per (re)load
        except AttributeError:
            cfg = self.cfg
            return bool(cfg.accesslog or cfg.logconfig or cfg.logconfig_dict or getattr(cfg, "logconfig_json", None)
                        or (cfg.syslog and not cfg.disable_redirect_access_to_syslog))


def _escaped(value):
    return value.replace('"', '\\"') if isinstance(value, str) else value


class _LineValues(Mapping):
    """What `%(name)s` in the access log format reads, as gunicorn's SafeAtoms answers it: `"` escaped
    in strings, `-` for anything unknown, `{header}i`-style names in any case."""

    __slots__ = ("_logger", "_resp", "_req", "_environ", "_request_time", "_gathered")

    def __init__(self, logger: Logger, resp, req, environ, request_time):
        self._logger = logger
        self._resp = resp
        self._req = req
        self._environ = environ
        self._request_time = request_time
        self._gathered: dict | None = None

    # logging formats the message with the mapping only when it is non-empty (LogRecord.__init__).
    def __len__(self) -> int:
        return 1

    def __iter__(self):
        return iter(())

    def __getitem__(self, name: str):
        environ = self._environ
        if name == "h":
            return _escaped(environ.get("REMOTE_ADDR", "-"))
        if name == "l":
            return "-"
        if name == "u":
            return _escaped(self._logger._get_user(environ) or "-")
        if name == "t":
            return self._logger.now()
        if name == "r":
            line = f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
            return _escaped(redact(line))
        if name == "s":
            status = self._resp.status
            return _escaped(status.split(None, 1)[0] if isinstance(status, str) else status)
        if name == "b":
            sent = getattr(self._resp, "sent", None)
            return "-" if sent is None else str(sent)
        if name == "f":
            return _escaped(redact(environ.get("HTTP_REFERER", "-")))
        if name == "a":
            return _escaped(environ.get("HTTP_USER_AGENT", "-"))
        return self._other(name)

    def _other(self, name: str):
        if self._gathered is None:
            gathered = self._logger.atoms(self._resp, self._req, self._environ, self._request_time)
            self._gathered = {key: _escaped(redact(value) if isinstance(value, str) else value)
                              for key, value in gathered.items()}
        key = name.lower() if name.startswith("{") else name
        return self._gathered.get(key, "-")
