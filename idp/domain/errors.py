"""Errors the services raise; the web rooms turn them into pages or JSON."""

from __future__ import annotations


class DomainError(Exception):
    """A rule was broken. `public` is safe to show; `detail` is for the log only."""

    code = "invalid_request"
    status = 400

    def __init__(self, public: str, detail: str | None = None):
        super().__init__(public)
        self.public = public
        self.detail = detail or public


class NotFound(DomainError):
    code = "not_found"
    status = 404


class Conflict(DomainError):
    code = "conflict"
    status = 409


class Throttled(DomainError):
    code = "too_many_requests"
    status = 429

    def __init__(self, public: str, retry_after: int = 60, detail: str | None = None):
        super().__init__(public, detail)
        self.retry_after = retry_after


class ServiceUnavailable(DomainError):
    """A shared part (Redis) is down; security checks refuse rather than let through."""

    code = "temporarily_unavailable"
    status = 503


class DeliveryUnavailable(ServiceUnavailable):
    """The mail server or SMS gateway did not take a message."""
