"""Reference for bench/run.py: a bare Flask app under the same gunicorn settings as `idp serve`.

It answers GET /.well-known/openid-configuration with prepared JSON bytes, like idp's discovery
endpoint, so "idp discovery req/s ÷ this req/s" shows what idp's app stack (middleware, security
headers, session handling) costs on top of Flask + gunicorn. The gunicorn options are idp's own
(idp/server.py `gunicorn_options`), so the two always run under the same settings.

    python bench/reference_app.py --port 8001 --workers 2 --threads 4
"""

from __future__ import annotations

import argparse
import json

from flask import Flask, Response

from idp.server import _Gunicorn, gunicorn_options

DOCUMENT = json.dumps({"issuer": "http://127.0.0.1", "jwks_uri": "http://127.0.0.1/jwks",
                       "response_types_supported": ["code"]}, separators=(",", ":")).encode()


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return Response(DOCUMENT, mimetype="application/json", headers={"Cache-Control": "public, max-age=300"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    options = gunicorn_options(args.host, args.port, args.workers, args.threads)
    _Gunicorn(create_app(), options).run()


if __name__ == "__main__":
    main()
