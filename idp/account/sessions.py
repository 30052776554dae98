"""/account/sessions: every sign-in of this person, the current one marked; end one or all others."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for

from idp.account import bp
from idp.account.reauth import recently_signed_in, signed_in
from idp.api.serializers import sessions_json
from idp.services import services


@bp.get("/account/sessions")
@signed_in
def sessions():
    svc = services()
    listed = sessions_json(svc.sessions.active_for_user(g.account_user.id), g.account_session.id)
    listed.sort(key=lambda s: not s["current"])
    return render_template("account/sessions.html", sessions=listed,
                           events=svc.audit.for_user(g.account_user.id, limit=20))


@bp.post("/account/sessions/<session_id>/end")
@recently_signed_in
def end_session(session_id: str):
    svc = services()
    session = svc.sessions.get(session_id)
    if session is None or session.user_id != g.account_user.id:
        flash("No such session.", "error")
    elif session_id == g.account_session.id:
        flash("To end this session, sign out.", "error")
    elif svc.sessions.end(session_id, "ended_by_user", "user", g.account_user.id):
        flash("The session was ended and its apps signed out.", "notice")
    else:
        flash("That session had already ended.", "notice")
    return redirect(url_for("account.sessions"))


@bp.post("/account/sessions/end-others")
@recently_signed_in
def end_other_sessions():
    ended = services().sessions.end_all_for_user(g.account_user.id, "ended_by_user",
                                                 except_session_id=g.account_session.id,
                                                 actor_type="user", actor_id=g.account_user.id)
    flash(f"{ended} other session(s) were ended.", "notice")
    return redirect(url_for("account.sessions"))


@bp.route("/account/sessions/end-link/<token>", methods=["GET", "POST"])
def end_session_by_link(token: str):
    """From the new-device email: works without signing in (the person may be on another device),
    once. A GET only shows the button, so mail scanners cannot use the link up."""
    svc = services()
    if request.method == "GET":
        session_id = svc.new_device.session_for_link(token, consume=False)
        session = svc.sessions.get(session_id) if session_id else None
        if session is not None and session.ended_at is not None:
            return render_template("account/end_session_link.html", done=True, found=True, already_ended=True)
        found = session is not None
        return render_template("account/end_session_link.html", done=None, found=found), (200 if found else 400)
    session_id = svc.new_device.session_for_link(token, consume=True)
    session = svc.sessions.get(session_id) if session_id else None
    if session is None:
        return render_template("account/end_session_link.html", done=False, found=False), 400
    ended_now = svc.sessions.end(session.id, "ended_by_email_link", "user", session.user_id)
    return render_template("account/end_session_link.html", done=True, found=True, already_ended=not ended_now)
