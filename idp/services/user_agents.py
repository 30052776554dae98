"""A User-Agent header turned into what a person recognises: device model, OS and browser."""

from __future__ import annotations

from functools import lru_cache

from ua_parser import BasicResolver, Parser, load_lazy_builtins

# The pure-Python resolver compiling each pattern when first tried: about 7 MiB per worker, where the
# default Rust one takes 26 MiB. A new User-Agent costs about 1 ms (every one seen is cached below),
# and only sign-ins and session lists look at them.
_parser = Parser(BasicResolver(load_lazy_builtins()))


def _version(part) -> str:
    return ".".join(v for v in (part.major, part.minor) if v) if part else ""


@lru_cache(maxsize=4096)
def describe_user_agent(user_agent: str | None) -> dict:
    if not user_agent:
        return {"model": None, "os": None, "browser": None}
    result = _parser.parse(user_agent[:1000])
    device = result.device
    model = None
    if device is not None and device.family not in (None, "Other"):
        model = " ".join(p for p in (device.brand, device.model or device.family) if p and p != "Generic")
    os = f"{result.os.family} {_version(result.os)}".strip() if result.os and result.os.family != "Other" else None
    ua = result.user_agent
    browser = f"{ua.family} {_version(ua)}".strip() if ua and ua.family != "Other" else None
    return {"model": model or None, "os": os, "browser": browser}
