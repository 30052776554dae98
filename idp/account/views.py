"""The profile page."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for

from idp.account import bp
from idp.web.current import current_session


def signed_in_or_redirect():
    session, user = current_session()
    if session is None:
        return None, None, redirect(url_for("login.sign_in", next=request.full_path.rstrip("?")))
    return session, user, None


@bp.get("/")
def home():
    return redirect(url_for("account.profile"))


@bp.get("/account")
def profile():
    session, user, go_sign_in = signed_in_or_redirect()
    if go_sign_in:
        return go_sign_in
    return render_template("account/profile.html", user=user, session=session)
