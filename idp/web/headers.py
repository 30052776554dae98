"""Security headers on every response (RFC 9700 §4.16, OWASP ASVS V3.4)."""

from __future__ import annotations

from flask import request

_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# Discovery, JWKS and the token endpoint are called from browser apps (RFC 9700 §2.6 allows CORS there only).
CORS_PATHS = ("/.well-known/openid-configuration", "/jwks", "/token")


def init_app(app, settings) -> None:
    hsts = "max-age=31536000; includeSubDomains" if settings.is_https else None

    @app.after_request
    def add_security_headers(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", _CSP)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        headers.setdefault("Permissions-Policy", "interest-cohort=()")
        if hsts:
            headers.setdefault("Strict-Transport-Security", hsts)
        if request.path in CORS_PATHS and request.headers.get("Origin"):
            headers["Access-Control-Allow-Origin"] = "*"
        elif "Access-Control-Allow-Origin" in headers:
            del headers["Access-Control-Allow-Origin"]
        if response.mimetype == "text/html" or request.path.startswith(("/token", "/userinfo", "/introspect")):
            headers.setdefault("Cache-Control", "no-store")
            headers.setdefault("Pragma", "no-cache")
        return response
