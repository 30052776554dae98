"""/admin/invitations: invite a person by email; see pending invitations, resend or cancel them."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for

from idp.admin import bp
from idp.admin.guards import admin_action, admin_page
from idp.domain.errors import DomainError
from idp.services.invitations import invitation_json, invitations
from idp.web.current import client_ip, user_agent


def _actor() -> tuple[str, str]:
    return "admin", g.account_user.id


def _page(error=None, email="", name="", status=200):
    listed = [invitation_json(i) for i in invitations().open()]
    return render_template("admin/invitations.html", invitations=listed, error=error, email=email,
                           name=name), status


@bp.get("/admin/invitations")
@admin_page
def invitations_page():
    return _page()


@bp.post("/admin/invitations")
@admin_action(back="admin.invitations_page")
def invite():
    email = (request.form.get("email") or "").strip()[:320]
    name = (request.form.get("name") or "").strip()[:200]
    try:
        invitation = invitations().invite(email, name, bool(request.form.get("admin")), _actor(), client_ip(),
                                          user_agent())
    except DomainError as failure:
        return _page(failure.public, email, name, failure.status)
    flash(f"An invitation was sent to {invitation.email}.", "notice")
    return redirect(url_for("admin.invitations_page"), code=303)


def _act(invitation_id: str, action: str, done: str):
    service = invitations()
    invitation = service.get(invitation_id)
    if invitation is None:
        flash("There is no such invitation.", "error")
    else:
        try:
            getattr(service, action)(invitation, _actor(), client_ip(), user_agent())
            flash(done.format(email=invitation.email), "notice")
        except DomainError as failure:
            flash(failure.public, "error")
    return redirect(url_for("admin.invitations_page"), code=303)


@bp.post("/admin/invitations/<invitation_id>/resend")
@admin_action(back="admin.invitations_page")
def resend_invitation(invitation_id: str):
    return _act(invitation_id, "resend", "A new link was sent to {email}; the old one no longer works.")


@bp.post("/admin/invitations/<invitation_id>/cancel")
@admin_action(back="admin.invitations_page")
def cancel_invitation(invitation_id: str):
    return _act(invitation_id, "cancel", "The invitation to {email} was cancelled.")
