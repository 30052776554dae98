"""The one seam between how a person proved who they are and how tokens are issued."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AuthResult:
    user_id: str
    amr: tuple[str, ...]
    acr: str
    auth_time: int
    session_id: str
    remember_device: bool = False
    extra: dict = field(default_factory=dict)
