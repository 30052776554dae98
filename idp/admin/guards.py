"""Who may use the admin pages, and the audit of what they do there."""

from __future__ import annotations

import functools
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import current_app, g, redirect, url_for

from idp.account.reauth import recently_signed_in, signed_in
from idp.services import services
from idp.services.admin_actions import AdminActions
from idp.web.current import client_ip, current_session, user_agent
from idp.web.errors import error_response

NOT_AN_ADMIN = "These pages are for administrators. Ask one if you need something changed."


def admin_page(view):
    """A signed-in administrator may look; anyone else signed in gets a friendly 403."""

    @functools.wraps(view)
    @signed_in
    def wrapper(*args, **kwargs):
        if not g.account_user.is_admin:
            return error_response(403, NOT_AN_ADMIN)
        return view(*args, **kwargs)

    return wrapper


def admin_action(back: str):
    """A change: an administrator with a recent sign-in (SPEC §6.9). `back` is the endpoint of the page
    the form sits on; a stale sign-in returns there after re-authenticating, since a POST target
    cannot be revisited with GET."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            page = _page_url(back, kwargs)
            session, user = current_session()
            if session is None:
                return redirect(url_for("login.sign_in", next=page))
            if not user.is_admin:
                return error_response(403, NOT_AN_ADMIN)
            acted = []

            def act(*a, **kw):
                acted.append(True)
                return view(*a, **kw)

            response = recently_signed_in(act)(*args, **kwargs)
            return response if acted else _with_next(response, page)

        return wrapper

    return decorate


def _page_url(endpoint: str, view_args: dict) -> str:
    rule = next(current_app.url_map.iter_rules(endpoint))
    return url_for(endpoint, **{k: v for k, v in view_args.items() if k in rule.arguments})


def _with_next(response, page: str):
    """Point the re-authentication redirect of `recently_signed_in` back at the admin page."""
    parts = urlsplit(response.location)
    query = [(k, page if k == "next" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    response.location = urlunsplit(parts._replace(query=urlencode(query)))
    return response


def admin_actions() -> AdminActions:
    """Account actions, audited with this administrator as the actor."""
    return AdminActions("admin", g.account_user.id, client_ip(), user_agent())


def audit_client_change(event: str, client_id: str, **details) -> None:
    services().audit.record(event, actor_type="admin", actor_id=g.account_user.id, client_id=client_id,
                            session_id=g.account_session.id, ip=client_ip(), user_agent=user_agent(), **details)
