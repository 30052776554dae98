"""Reference for bench/run.py: a bare Flask app under the same gunicorn settings as `idp serve`.

It answers GET /.well-known/openid-configuration with prepared JSON bytes, like idp's discovery
endpoint, so "idp discovery req/s ÷ this req/s" shows what idp's app stack (middleware, security
headers, session handling) costs on top of Flask + gunicorn. The gunicorn options mirror
idp/server.py `run_gunicorn` (gthread workers, access log to stdout, same timeouts and keep-alive);
keep them in step when that changes.

    python bench/reference_app.py --port 8001 --workers 2 --threads 4
"""

from __future__ import annotations

import argparse
import json

from flask import Flask, Response
from gunicorn.app.base import BaseApplication

DOCUMENT = json.dumps({"issuer": "http://127.0.0.1", "jwks_uri": "http://127.0.0.1/jwks",
                       "response_types_supported": ["code"]}, separators=(",", ":")).encode()


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return Response(DOCUMENT, mimetype="application/json", headers={"Cache-Control": "public, max-age=300"})

    return app


class _Gunicorn(BaseApplication):
    def __init__(self, app, options: dict):
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self):
        for key, value in self._options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self):
        return self._app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    options = {
        "bind": f"{args.host}:{args.port}",
        "workers": args.workers,
        "threads": args.threads,
        "worker_class": "gthread",
        "accesslog": "-",
        "errorlog": "-",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "forwarded_allow_ips": "127.0.0.1",
    }
    _Gunicorn(create_app(), options).run()


if __name__ == "__main__":
    main()
