"""/invite/<token>: the invited person chooses a password; the account is created (or activated) and signed in.

The emailed link proves the mailbox, so this first sign-in counts as two steps: amr ["pwd", "email"].
A GET only shows the form, so mail scanners that open links do not use them up."""

from __future__ import annotations

from flask import render_template, request, url_for

from idp.domain.errors import DomainError, NotFound
from idp.login import bp
from idp.login.finish import finish_sign_in
from idp.services.invitations import INVALID_LINK, invitations
from idp.web.current import client_ip, user_agent


def _invalid():
    return render_template("login/invitation_invalid.html", message=INVALID_LINK), 410


@bp.get("/invite/<token>")
def invitation(token: str):
    invitation = invitations().find_usable(token)
    if invitation is None:
        return _invalid()
    return render_template("login/invitation.html", token=token, email=invitation.email, error=None)


@bp.post("/invite/<token>")
def invitation_submit(token: str):
    service = invitations()
    try:
        user = service.accept(token, request.form.get("password") or "", client_ip(), user_agent())
    except NotFound:
        return _invalid()
    except DomainError as invalid:
        invitation = service.find_usable(token)
        if invitation is None:
            return _invalid()
        return render_template("login/invitation.html", token=token, email=invitation.email,
                               error=invalid.public), 200
    response, _ = finish_sign_in(user.id, ["pwd", "email"], url_for("account.security"))
    return response
