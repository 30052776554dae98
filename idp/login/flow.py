"""A half-finished sign-in: server-side state under an opaque id with a deadline.

The id lives in this browser's signed UI cookie, so a step cannot be reached from another
browser, skipped by posting to a later URL, or replayed once the flow is finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from flask import session as ui_state

from idp.crypto.secrets import random_token
from idp.services import services

_FLOW_COOKIE_KEY = "login_flow"

# Steps of the chain, in order.
SECOND_FACTOR = "second_factor"


@dataclass
class LoginFlow:
    id: str
    user_id: str
    step: str
    amr: list[str]
    next_url: str
    started_at: float
    # Set when the relying app asked for a possession factor (step-up) or no trusted-device skip is allowed.
    require_possession: bool = False
    method: str | None = None
    codes_sent: list[str] = field(default_factory=list)


def _key(flow_id: str) -> str:
    return f"login:{flow_id}"


def start_flow(user_id: str, amr: list[str], next_url: str, require_possession: bool = False,
               method: str | None = None) -> LoginFlow:
    """`method`: the one the second-factor page shows first (the strongest the person has)."""
    flow = LoginFlow(
        id=random_token(24),
        user_id=user_id,
        step=SECOND_FACTOR,
        amr=list(amr),
        next_url=next_url,
        started_at=time.time(),
        require_possession=require_possession,
        method=method,
    )
    save_flow(flow)
    ui_state[_FLOW_COOKIE_KEY] = flow.id
    return flow


def save_flow(flow: LoginFlow) -> None:
    svc = services()
    remaining = int(flow.started_at + svc.settings.login_flow_ttl - time.time())
    if remaining <= 0:
        discard_flow(flow)
        return
    svc.store.set(_key(flow.id), json.dumps(asdict(flow)), remaining)


def current_flow(step: str) -> LoginFlow | None:
    """The flow of this browser, if it exists, has not expired, and is at the given step."""
    flow_id = ui_state.get(_FLOW_COOKIE_KEY)
    if not flow_id:
        return None
    raw = services().store.get(_key(flow_id))
    if raw is None:
        ui_state.pop(_FLOW_COOKIE_KEY, None)
        return None
    flow = LoginFlow(**json.loads(raw))
    return flow if flow.step == step else None


def discard_flow(flow: LoginFlow | None) -> None:
    if flow is not None:
        services().store.delete(_key(flow.id))
    ui_state.pop(_FLOW_COOKIE_KEY, None)
