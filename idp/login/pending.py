"""A multi-step form (password reset, sign-up) kept server-side under an opaque id that only this
browser's signed UI cookie names, with the same deadline as a sign-in flow."""

from __future__ import annotations

import json
import time

from flask import session as ui_state

from idp.services import services


class BrowserBoundState:
    def __init__(self, prefix: str, cookie_key: str):
        self.prefix = prefix
        self.cookie_key = cookie_key

    def _key(self, state_id: str) -> str:
        return f"{self.prefix}:{state_id}"

    def load(self) -> dict | None:
        state_id = ui_state.get(self.cookie_key)
        if not state_id or not isinstance(state_id, str):
            return None
        raw = services().store.get(self._key(state_id))
        if raw is None:
            ui_state.pop(self.cookie_key, None)
            return None
        return json.loads(raw)

    def save(self, pending: dict) -> bool:
        """Store it for what is left of its deadline; False (and gone) once the deadline has passed."""
        remaining = int(pending["started_at"] + services().settings.login_flow_ttl - time.time())
        if remaining <= 0:
            self.discard(pending)
            return False
        services().store.set(self._key(pending["id"]), json.dumps(pending), remaining)
        return True

    def discard(self, pending: dict | None) -> None:
        if pending is not None:
            services().store.delete(self._key(pending["id"]))
        ui_state.pop(self.cookie_key, None)
