"""Where the product may send a browser after a step: only back to itself (RFC 9700 §2.1 open redirectors)."""

from __future__ import annotations

from urllib.parse import urlsplit


def safe_next(target: str | None, default: str = "/account") -> str:
    """A local path (no scheme, no host, no backslash tricks), or the default."""
    if not target or not isinstance(target, str) or len(target) > 2000:
        return default
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 0x20 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
