"""Every failure ends in a friendly page for a person or JSON for a program, never a traceback."""

from __future__ import annotations

import logging

from flask import jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from idp.domain.errors import DomainError

log = logging.getLogger("idp.web")

_JSON_PREFIXES = ("/api/", "/token", "/introspect", "/revoke", "/userinfo", "/jwks", "/.well-known/")

_TITLES = {
    400: "This request could not be understood",
    403: "You cannot do that",
    404: "Page not found",
    405: "This page cannot be used that way",
    413: "That was too large",
    429: "Too many attempts",
    500: "Something went wrong on our side",
    503: "Temporarily unavailable",
}


def wants_json() -> bool:
    if request.path.startswith(_JSON_PREFIXES):
        return True
    # A page's own script (static/webauthn.js) asks for JSON explicitly; a navigation never prefers it.
    return request.accept_mimetypes.best_match(("text/html", "application/json")) == "application/json"


def error_response(status: int, message: str, error: str | None = None, title: str | None = None):
    if wants_json():
        body = {"error": error or _code_for(status), "error_description": message}
        return jsonify(body), status, {"Cache-Control": "no-store"}
    html = render_template("errors/error.html", title=title or _TITLES.get(status, "Error"), message=message)
    return html, status


def _code_for(status: int) -> str:
    return {
        400: "invalid_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "invalid_request",
        429: "too_many_requests",
        503: "temporarily_unavailable",
    }.get(status, "server_error")


def init_app(app) -> None:
    @app.errorhandler(CSRFError)
    def csrf_failed(exc):
        return error_response(
            400, "The form expired or was sent from another site. Go back, reload the page and try again."
        )

    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError):
        log.info("domain error: %s", exc.detail)
        response = error_response(exc.status, exc.public, exc.code)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            response = app.make_response(response)
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message = {
            404: "There is nothing at this address.",
            405: "This address does not accept that kind of request.",
            413: "The request was larger than this server accepts.",
        }.get(exc.code, "The request could not be processed.")
        response = app.make_response(error_response(exc.code or 400, message))
        # Keep what the exception says besides its body, e.g. the Allow header a 405 must carry (RFC 9110 §15.5.6).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(OperationalError)
    def database_unreachable(exc: OperationalError):
        # Transient by nature: a refused connection, one the server closed (restart, failover; the
        # pool then drops every connection opened before it), a deadlock, SQLite's "database is
        # locked". The transaction in progress is rolled back, so a retry can succeed.
        log.warning("database unreachable on %s %s: %s", request.method, request.path, exc.orig)
        response = app.make_response(error_response(503, "The service is temporarily unavailable. "
                                                          "Please try again in a moment."))
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "Please try again. If it keeps happening, contact your administrator.")
