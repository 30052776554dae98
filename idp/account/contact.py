"""/account/contact: change the email address or phone number, confirmed by a code sent to the new
one; the old one is told. One sensitive change at a time (SPEC §6.9)."""

from __future__ import annotations

import functools
import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import flash, g, redirect, render_template, request, url_for

from idp.account import bp
from idp.account.reauth import recently_signed_in
from idp.domain.errors import DomainError, ServiceUnavailable
from idp.services import account_changes as changes
from idp.services import services
from idp.services.accounts import validate_email, validate_phone
from idp.services.limits import minutes
from idp.web.current import client_ip, user_agent

log = logging.getLogger(__name__)

WRONG_CODE = "That code is not right, or it has expired. Check it and try again, or send a new one."
CONTACT_KINDS = ("email", "phone")


def fresh_for(page_endpoint: str):
    """`recently_signed_in` for a form target: a stale sign-in comes back to the page after signing in
    again, since a POST target cannot be revisited with GET."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            acted = []

            def act(*a, **kw):
                acted.append(True)
                return view(*a, **kw)

            response = recently_signed_in(act)(*args, **kwargs)
            if acted:
                return response
            parts = urlsplit(response.location)
            query = [(k, url_for(page_endpoint) if k == "next" else v)
                     for k, v in parse_qsl(parts.query, keep_blank_values=True)]
            response.location = urlunsplit(parts._replace(query=urlencode(query)))
            return response

        return wrapper

    return decorate


def audit(event: str, **details) -> None:
    services().audit.record(event, user_id=g.account_user.id, session_id=g.account_session.id, ip=client_ip(),
                            user_agent=user_agent(), **details)


def check_code(recipient, flow: str, channel: str, code: str) -> bool:
    """A sent code, counted like every other code (SPEC §6.3): wrong ones block the address and, in a
    run, lock the account. Raises Throttled / ServiceUnavailable (fail closed)."""
    svc = services()
    user = g.account_user
    ip = client_ip()
    svc.code_limits.check_ip(ip)
    if svc.factors.verify_code(recipient, flow, channel, code):
        svc.code_limits.record_success(user.id, ip)
        return True
    outcome = svc.code_limits.record_failure(user.id, ip)
    audit("code_failed", channel=channel, purpose=request.endpoint)
    if outcome.account_locked:
        changes.finish(user.id)
        svc.lockouts.lock(user, ip, user_agent())
        raise AccountLocked()
    if outcome.ip_blocked:
        raise DomainError(f"Too many wrong codes from your network. "
                          f"Try again in {minutes(svc.settings.code_ip_block_seconds)}.")
    return False


class AccountLocked(Exception):
    """Too many wrong codes in a row: the account was locked and its sessions ended."""


def locked_page():
    return render_template("login/locked.html"), 403


def _send(kind: str, change: dict) -> None:
    svc = services()
    user = g.account_user
    if kind == "email":
        svc.factors.send_code(changes.Recipient(user.id, email=change["value"]), change["flow"], "email",
                              purpose="email change")
    else:
        svc.factors.send_code(changes.Recipient(user.id, phone=change["value"]), change["flow"], "sms",
                              purpose="phone change")


@bp.get("/account/contact")
@recently_signed_in
def contact():
    change = changes.pending(g.account_user.id)
    return render_template("account/contact.html", user=g.account_user, change=change,
                           contact_kinds=CONTACT_KINDS)


def _begin(kind: str, raw: str):
    user = g.account_user
    try:
        if kind == "email":
            value = validate_email(raw)
            if value == user.email:
                raise DomainError("That is already your email address.")
            if changes.email_in_use(value, user.id):
                raise DomainError(changes.EMAIL_TAKEN)
        else:
            value = validate_phone(raw)
            if value is None:
                raise DomainError("Enter the new phone number.")
            if value == user.phone and user.phone_verified:
                raise DomainError("That is already your phone number.")
            if changes.phone_in_use(value, user.id):
                raise DomainError(changes.PHONE_TAKEN)
        change = changes.begin(user.id, kind, value=value)
        try:
            _send(kind, change)
        except DomainError:
            changes.finish(user.id)  # nothing went out: nothing is pending either
            raise
    except DomainError as problem:
        flash(problem.public, "error")
        return redirect(url_for("account.contact"))
    audit(f"{kind}_change_started")
    where = "new address" if kind == "email" else "new number"
    flash(f"We sent a 6-digit code to your {where}. Enter it to finish the change.", "notice")
    return redirect(url_for("account.contact"))


@bp.post("/account/contact/email")
@fresh_for("account.contact")
def change_email():
    return _begin("email", request.form.get("email", ""))


@bp.post("/account/contact/phone")
@fresh_for("account.contact")
def change_phone():
    return _begin("phone", request.form.get("phone", ""))


def _tell_old(kind: str, old: str | None, new: str | None) -> None:
    """Tell the old address or number; the change stands even when the message cannot go out."""
    if not old:
        return
    svc = services()
    if kind == "email":
        svc.notifier.email_notice(old, "email_changed", email=old, new_email=new)
        return
    what = f"changed to one ending in {new[-2:]}" if new else "removed from your account"
    try:
        svc.notifier.sms(old, f"The phone number of your {svc.settings.product_name} account was {what}. "
                              f"If this was not you, contact your administrator.")
    except ServiceUnavailable:
        log.warning("could not tell the old phone number of user %s about the change", g.account_user.id)


@bp.post("/account/contact/verify")
@fresh_for("account.contact")
def verify_contact():
    user = g.account_user
    change = changes.pending(user.id)
    if change is None or change["kind"] not in CONTACT_KINDS:
        flash("There is no change to confirm, or it ran out. Start again.", "error")
        return redirect(url_for("account.contact"))
    kind = change["kind"]
    recipient = changes.Recipient(user.id, **{kind: change["value"]})
    try:
        proven = check_code(recipient, change["flow"], "email" if kind == "email" else "sms",
                            request.form.get("code", ""))
    except AccountLocked:
        return locked_page()
    except DomainError as refused:  # blocked address, or the store is down: the change stays pending
        flash(refused.public, "error")
        return redirect(url_for("account.contact"))
    if not proven:
        flash(WRONG_CODE, "error")
        return redirect(url_for("account.contact"))
    try:
        old = changes.apply_email(user, change["value"]) if kind == "email" else changes.apply_phone(
            user, change["value"])
    except DomainError as problem:  # taken meanwhile by another account
        changes.finish(user.id)
        flash(problem.public, "error")
        return redirect(url_for("account.contact"))
    changes.finish(user.id)
    audit(f"{kind}_changed")
    _tell_old(kind, old, change["value"])
    flash("Your email address was changed." if kind == "email" else "Your phone number was changed.", "notice")
    return redirect(url_for("account.contact"))


@bp.post("/account/contact/resend")
@fresh_for("account.contact")
def resend_contact_code():
    change = changes.pending(g.account_user.id)
    if change is None or change["kind"] not in CONTACT_KINDS:
        flash("There is no change in progress. Start again.", "error")
        return redirect(url_for("account.contact"))
    try:
        _send(change["kind"], change)
    except DomainError as problem:
        flash(problem.public, "error")
    else:
        flash("A new code is on its way; the old one no longer works.", "notice")
    return redirect(url_for("account.contact"))


@bp.post("/account/contact/cancel")
@fresh_for("account.contact")
def cancel_contact_change():
    change = changes.pending(g.account_user.id)
    if change is not None and change["kind"] in CONTACT_KINDS:
        changes.finish(g.account_user.id)
        flash("The change was cancelled.", "notice")
    return redirect(url_for("account.contact"))


@bp.post("/account/contact/phone/remove")
@fresh_for("account.contact")
def remove_phone():
    svc = services()
    user = g.account_user
    if not user.phone:
        flash("There is no phone number on your account.", "error")
        return redirect(url_for("account.contact"))
    try:
        changes.begin(user.id, "phone_removal")
    except DomainError as busy:
        flash(busy.public, "error")
        return redirect(url_for("account.contact"))
    had_sms = user.sms_otp_enabled
    try:
        old = changes.apply_phone(user, None)
    finally:
        changes.finish(user.id)
    audit("phone_removed")
    if had_sms:
        # A factor went with the number: trust given under it is given again, not kept.
        audit("factor_removed", method="sms")
        svc.devices.forget_all(user.id)
    _tell_old("phone", old, None)
    flash("Your phone number was removed." + (" SMS codes are off." if had_sms else ""), "notice")
    return redirect(url_for("account.contact"))
