"""What an administrator (person or admin client) may do to an account; each action is audited."""

from __future__ import annotations

from idp.extensions import db
from idp.services import services
from idp.storage.models import User, utcnow


class AdminActions:
    def __init__(self, actor_type: str, actor_id: str, ip: str | None = None, user_agent: str | None = None):
        self.actor_type = actor_type
        self.actor_id = actor_id
        self.ip = ip
        self.user_agent = user_agent
        self.svc = services()

    def _audit(self, event: str, user_id: str | None, **details) -> None:
        self.svc.audit.record(event, user_id=user_id, actor_type=self.actor_type, actor_id=self.actor_id,
                              ip=self.ip, user_agent=self.user_agent, **details)

    def end_session(self, session_id: str) -> bool:
        return self.svc.sessions.end(session_id, "ended_by_admin", self.actor_type, self.actor_id)

    def logout_everywhere(self, user: User) -> int:
        return self.svc.sessions.end_all_for_user(user.id, "ended_by_admin", actor_type=self.actor_type,
                                                  actor_id=self.actor_id)

    def reset_second_factors(self, user: User) -> dict:
        """SPEC §6.8: factors and trusted devices go, and every session ends."""
        removed = self.svc.factors.methods(user)
        self.svc.factors.reset_all(user)
        forgotten = self.svc.devices.forget_all(user.id)
        ended = self.svc.sessions.end_all_for_user(user.id, "mfa_reset", actor_type=self.actor_type,
                                                   actor_id=self.actor_id)
        self._audit("mfa_reset", user.id, factors_removed=removed, devices_forgotten=forgotten)
        return {"factors_removed": removed, "devices_forgotten": forgotten, "sessions_ended": ended}

    def lock(self, user: User) -> dict:
        user.locked_at = utcnow()
        db.session.commit()
        ended = self.svc.sessions.end_all_for_user(user.id, "account_locked", actor_type=self.actor_type,
                                                   actor_id=self.actor_id)
        self._audit("account_locked", user.id, by="admin")
        return {"locked": True, "sessions_ended": ended}

    def unlock(self, user: User) -> dict:
        self.svc.lockouts.unlock(user)
        self._audit("account_unlocked", user.id, by="admin")
        return {"locked": False}

    def delete_account(self, user: User) -> int:
        """SPEC §6.10: every session ends (apps told), then the account goes; the trail keeps a tombstone."""
        from idp.services.account_changes import delete_account

        return delete_account(user, self.actor_type, self.actor_id, self.ip, self.user_agent)

    def revoke_token(self, token: str) -> bool:
        """An access token (by jti) or a refresh token (its whole grant) of any client."""
        grants = self.svc.grants
        claims = grants.decode_access_token(token)
        if claims is not None:
            grants.revoke_access_token(claims["jti"])
            user_id = None if claims.get("sub") == claims.get("client_id") else claims.get("sub")
            self._audit("token_revoked", user_id, client_id=claims.get("client_id"), token_type="access_token")
            return True
        found = grants.find_refresh_token(token)
        if found is not None:
            grants.revoke_family(found.family.id, "revoked_by_admin")
            db.session.commit()
            self._audit("token_revoked", found.family.user_id, client_id=found.family.client_id,
                        token_type="refresh_token")
            return True
        return False
