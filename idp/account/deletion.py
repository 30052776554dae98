"""/account/delete (SPEC §4, §6.10): a fresh sign-in, then a code sent to the email address (and one
to the phone when a verified number is on file), then a confirm button. Everything of the account
goes; its relying apps are told through back-channel logout; the audit trail keeps a tombstone."""

from __future__ import annotations

from flask import flash, g, make_response, redirect, render_template, request, url_for

from idp.account import bp
from idp.account.contact import AccountLocked, audit, check_code, fresh_for, locked_page
from idp.account.reauth import recently_signed_in
from idp.domain.errors import DomainError
from idp.services import account_changes as changes
from idp.services import services
from idp.web.cookies import clear_session_cookie
from idp.web.current import client_ip, forget_current_session, user_agent

WRONG_CODE = "That code is not right, or it has expired. Check it and try again, or send new codes."


def _channels(change: dict) -> list[str]:
    return ["email", "sms"] if change.get("sms") else ["email"]


def _remaining(change: dict) -> list[str]:
    return [c for c in _channels(change) if not change.get(f"{c}_verified")]


def _send_codes(change: dict, only: list[str] | None = None) -> None:
    svc = services()
    for channel in only or _remaining(change):
        svc.factors.send_code(g.account_user, change["flow"], channel, purpose="account deletion")


@bp.get("/account/delete")
@recently_signed_in
def delete_account():
    user = g.account_user
    change = changes.pending(user.id)
    if change is not None and change["kind"] != "delete":
        state = "busy"
    elif changes.is_last_admin(user):
        state = "last_admin"
    elif change is None:
        state = "start"
    elif _remaining(change):
        state = "codes"
    else:
        state = "confirm"
    return render_template("account/delete.html", user=user, state=state,
                           remaining=_remaining(change) if change and state == "codes" else [],
                           one_at_a_time=changes.ONE_AT_A_TIME, last_admin=changes.LAST_ADMIN)


def _back():
    return redirect(url_for("account.delete_account"))


def _deletion_in_progress() -> dict | None:
    change = changes.pending(g.account_user.id)
    return change if change is not None and change["kind"] == "delete" else None


@bp.post("/account/delete/start")
@fresh_for("account.delete_account")
def start_deletion():
    user = g.account_user
    if changes.is_last_admin(user):
        flash(changes.LAST_ADMIN, "error")
        return _back()
    if _deletion_in_progress():
        return _back()
    try:
        change = changes.begin(user.id, "delete", sms=bool(user.phone and user.phone_verified))
        try:
            _send_codes(change)
        except DomainError:
            changes.finish(user.id)  # what was not sent cannot be entered: start again
            raise
    except DomainError as problem:
        flash(problem.public, "error")
        return _back()
    audit("account_deletion_started")
    flash("We sent a code to your email address" + (" and one to your phone" if change["sms"] else "") + ".",
          "notice")
    return _back()


@bp.post("/account/delete/verify")
@fresh_for("account.delete_account")
def verify_deletion():
    user = g.account_user
    change = _deletion_in_progress()
    if change is None:
        flash("There is no deletion in progress, or it ran out. Start again.", "error")
        return _back()
    try:
        for channel in _remaining(change):
            if not check_code(user, change["flow"], channel, request.form.get(f"{channel}_code", "")):
                flash(WRONG_CODE, "error")
                return _back()
            change[f"{channel}_verified"] = True
            changes.update(user.id, change)
    except AccountLocked:
        return locked_page()
    except DomainError as refused:
        flash(refused.public, "error")
        return _back()
    return _back()


@bp.post("/account/delete/resend")
@fresh_for("account.delete_account")
def resend_deletion_codes():
    change = _deletion_in_progress()
    if change is None or not _remaining(change):
        return _back()
    try:
        _send_codes(change)
    except DomainError as problem:
        flash(problem.public, "error")
    else:
        flash("New codes are on their way; the old ones no longer work.", "notice")
    return _back()


@bp.post("/account/delete/cancel")
@fresh_for("account.delete_account")
def cancel_deletion():
    if _deletion_in_progress():
        changes.finish(g.account_user.id)
        flash("Your account stays. Nothing was deleted.", "notice")
    return redirect(url_for("account.profile"))


@bp.post("/account/delete/confirm")
@fresh_for("account.delete_account")
def confirm_deletion():
    user = g.account_user
    change = _deletion_in_progress()
    if change is None or _remaining(change):
        flash("Enter the codes first.", "error")
        return _back()
    try:
        changes.delete_account(user, "user", user.id, client_ip(), user_agent(), g.account_session.id)
    except DomainError as refused:  # the last administrator
        changes.finish(user.id)
        flash(refused.public, "error")
        return _back()
    forget_current_session()
    response = deleted_page()
    clear_session_cookie(response)
    return response


def deleted_page():
    """What the person sees once the account is gone (also after an administrator deleted their own)."""
    return make_response(render_template("account/deleted.html"), 200)
