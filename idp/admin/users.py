"""/admin and /admin/users/<id>: find a person; see their sessions, devices, factors and audit trail;
end sessions, reset the second factors, lock and unlock, delete."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for

from idp.admin import bp
from idp.admin.guards import admin_action, admin_actions, admin_page
from idp.api.serializers import device_json, event_json, sessions_json, user_json
from idp.domain.errors import Conflict, NotFound
from idp.services import services

FACTOR_NAMES = {
    "webauthn": "Passkey or security key",
    "totp": "Authenticator app",
    "sms": "SMS codes",
    "email": "Email codes",
    "recovery": "Recovery codes",
}


@bp.get("/admin")
@admin_page
def index():
    email = (request.args.get("email") or "").strip()[:320]
    found = None
    if email:
        person = services().accounts.find_by_email(email)
        found = user_json(person) if person else None
    return render_template("admin/index.html", email=email, found=found)


def _person(user_id: str):
    person = services().accounts.get(user_id)
    if person is None:
        raise NotFound("There is no account with this id.")
    return person


@bp.get("/admin/users/<user_id>")
@admin_page
def user(user_id: str):
    svc = services()
    person = _person(user_id)
    methods = svc.factors.methods(person)
    return render_template(
        "admin/user.html",
        user=user_json(person, methods),
        factor_names=FACTOR_NAMES,
        recovery_left=svc.factors.recovery_codes_left(person.id),
        devices=[device_json(d) for d in svc.devices.list(person.id)],
        sessions=sessions_json(svc.sessions.active_for_user(person.id), g.account_session.id),
        events=[event_json(e) for e in svc.audit.for_user(person.id, limit=50)],
        is_self=person.id == g.account_user.id,
    )


def _back(user_id: str):
    return redirect(url_for("admin.user", user_id=user_id))


@bp.post("/admin/users/<user_id>/sessions/<session_id>/end")
@admin_action(back="admin.user")
def end_session(user_id: str, session_id: str):
    session = services().sessions.get(session_id)
    if session is None or session.user_id != user_id or session.ended_at is not None:
        flash("That session is not open any more.", "error")
    elif session_id == g.account_session.id:
        flash("This is your own current session; to end it, sign out.", "error")
    elif admin_actions().end_session(session_id):
        flash("The session was ended and its apps signed out.", "notice")
    return _back(user_id)


@bp.post("/admin/users/<user_id>/logout")
@admin_action(back="admin.user")
def logout_everywhere(user_id: str):
    person = _person(user_id)
    ended = admin_actions().logout_everywhere(person)
    flash(f"{ended} session(s) were ended and their apps signed out.", "notice")
    return _back(user_id)


@bp.post("/admin/users/<user_id>/mfa/reset")
@admin_action(back="admin.user")
def reset_second_factors(user_id: str):
    person = _person(user_id)
    result = admin_actions().reset_second_factors(person)
    flash(f"Two-step verification was reset: {len(result['factors_removed'])} method(s) removed, "
          f"{result['devices_forgotten']} trusted device(s) forgotten, {result['sessions_ended']} session(s) ended.",
          "notice")
    return _back(user_id)


@bp.post("/admin/users/<user_id>/lock")
@admin_action(back="admin.user")
def lock(user_id: str):
    person = _person(user_id)
    if person.id == g.account_user.id:
        flash("You cannot lock your own account.", "error")
    elif person.locked_at is not None:
        flash("The account is already locked.", "error")
    else:
        ended = admin_actions().lock(person)["sessions_ended"]
        flash(f"The account is locked; {ended} session(s) were ended.", "notice")
    return _back(user_id)


@bp.post("/admin/users/<user_id>/delete")
@admin_action(back="admin.user")
def delete(user_id: str):
    person = _person(user_id)
    is_self = person.id == g.account_user.id
    try:
        admin_actions().delete_account(person)
    except Conflict as refused:  # the last administrator
        flash(refused.public, "error")
        return _back(user_id)
    if is_self:
        from idp.account.deletion import deleted_page
        from idp.web.cookies import clear_session_cookie
        from idp.web.current import forget_current_session

        forget_current_session()
        response = deleted_page()
        clear_session_cookie(response)
        return response
    flash("The account was deleted; its sessions were ended and their apps signed out.", "notice")
    return redirect(url_for("admin.index"))


@bp.post("/admin/users/<user_id>/unlock")
@admin_action(back="admin.user")
def unlock(user_id: str):
    person = _person(user_id)
    if person.locked_at is None:
        flash("The account is not locked.", "error")
    else:
        admin_actions().unlock(person)
        flash("The account is unlocked; its owner can sign in again.", "notice")
    return _back(user_id)
