"""Security headers on every response (RFC 9700 §4.16, OWASP ASVS V3.4)."""

from __future__ import annotations

from flask import request

_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# Discovery, JWKS and the token endpoint are called from browser apps (RFC 9700 §2.6 allows CORS there
# only). The two public documents carry the header whoever asks, so a shared cache may keep one copy.
PUBLIC_DOCUMENT_PATHS = ("/.well-known/openid-configuration", "/jwks")
CORS_PATHS = ("/token",)


NO_STORE_PATHS = ("/token", "/userinfo", "/introspect")


def security_headers(settings) -> list[tuple[str, str]]:
    """The headers every response carries."""
    headers = [
        ("Content-Security-Policy", _CSP),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "interest-cohort=()"),
    ]
    if settings.is_https:
        headers.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
    return headers


def init_app(app, settings) -> None:
    always = security_headers(settings)
    with_no_store = always + [("Cache-Control", "no-store"), ("Pragma", "no-cache")]

    @app.after_request
    def add_security_headers(response):
        # One pass over the few headers a view set, then plain appends: werkzeug's setdefault scans
        # and raises internally per call, a quarter of the time of the discovery endpoint.
        headers = response.headers
        present = {name.lower() for name in headers.keys()}
        path = request.path
        wanted = with_no_store if response.mimetype == "text/html" or path.startswith(NO_STORE_PATHS) else always
        for name, value in wanted:
            if name.lower() not in present:
                headers.add(name, value)
        if path in PUBLIC_DOCUMENT_PATHS or (path in CORS_PATHS and request.headers.get("Origin")):
            headers["Access-Control-Allow-Origin"] = "*"
        elif "access-control-allow-origin" in present:
            del headers["Access-Control-Allow-Origin"]
        return response
