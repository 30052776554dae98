"""References for bench/run.py, under the same gunicorn settings as `idp serve`.

- GET /.well-known/openid-configuration: a bare Flask app answering prepared JSON bytes, like idp's
  discovery endpoint, so "idp req/s ÷ this req/s" shows what idp costs on top of Flask + gunicorn.
- POST /token (with --redis-url): the floor of a client_credentials grant whose JWT access tokens
  can be revoked, as one plain WSGI function in front of Flask: parse the form, check the Basic
  credentials with a keyed SHA-256, sign an ES256 JWT, record it in Redis with one SET. No
  framework, no scope or grant-type rules, no client lookup: what no implementation on this stack
  can skip, and so the most a token endpoint here can do.

The gunicorn options are idp's own (idp/server.py `gunicorn_options`), so all run under the same
settings.

    python bench/reference_app.py --port 8001 --workers 2 --threads 4 [--redis-url redis://… --redis-prefix P]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from urllib.parse import parse_qsl

import redis
from flask import Flask, Response
from joserfc import jwt
from joserfc.jwk import ECKey

from idp.server import _Gunicorn, gunicorn_options

DOCUMENT = json.dumps({"issuer": "http://127.0.0.1", "jwks_uri": "http://127.0.0.1/jwks",
                       "response_types_supported": ["code"]}, separators=(",", ":")).encode()


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return Response(DOCUMENT, mimetype="application/json", headers={"Cache-Control": "public, max-age=300"})

    return app


class TokenFloor:
    """POST /token as described above; everything else goes to the Flask app."""

    def __init__(self, flask_app, redis_url: str, prefix: str, client_id: str, client_secret: str):
        self.flask_app = flask_app
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2)
        self.prefix = prefix
        self.client_id = client_id
        self.key = secrets.token_bytes(32)
        self.secret_hash = self._hash(client_secret)
        self.signing_key = ECKey.generate_key("P-256")

    def _hash(self, secret: str) -> str:
        return hmac.new(self.key, secret.encode(), hashlib.sha256).hexdigest()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/token" or environ.get("REQUEST_METHOD") != "POST":
            return self.flask_app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = dict(parse_qsl(environ["wsgi.input"].read(length).decode()))
        client_id, _, secret = base64.b64decode(environ.get("HTTP_AUTHORIZATION", "")[6:]).decode().partition(":")
        if (form.get("grant_type") != "client_credentials" or client_id != self.client_id
                or not hmac.compare_digest(self._hash(secret), self.secret_hash)):
            start_response("401 Unauthorized", [("Content-Type", "application/json"), ("Content-Length", "2")])
            return [b"{}"]
        now, jti = int(time.time()), secrets.token_urlsafe(16)
        claims = {"iss": "http://127.0.0.1", "sub": client_id, "aud": "http://127.0.0.1", "client_id": client_id,
                  "iat": now, "exp": now + 600, "jti": jti, "scope": "openid"}
        token = jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims, self.signing_key)
        self.redis.set(f"{self.prefix}at:{jti}", client_id, ex=600)
        body = json.dumps({"access_token": token, "token_type": "Bearer", "expires_in": 600,
                           "scope": "openid"}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--redis-url", help="serve the POST /token floor, recording tokens in this Redis")
    parser.add_argument("--redis-prefix", default="bench-floor:")
    parser.add_argument("--client-id", default="floor-machine")
    args = parser.parse_args()
    app = create_app()
    if args.redis_url:
        # The secret comes by environment, not argv, where other users of the host could read it.
        app = TokenFloor(app, args.redis_url, args.redis_prefix, args.client_id, os.environ["BENCH_FLOOR_SECRET"])
    options = gunicorn_options(args.host, args.port, args.workers, args.threads)
    _Gunicorn(app, options).run()


if __name__ == "__main__":
    main()
