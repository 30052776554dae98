"""/account/devices: browsers trusted to skip the second factor."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for

from idp.account import bp
from idp.account.reauth import signed_in
from idp.domain.errors import DomainError
from idp.services import services
from idp.web.cookies import read_device_cookie


@bp.get("/account/devices")
@signed_in
def devices():
    svc = services()
    current = svc.devices.recognise(g.account_user.id, read_device_cookie(), touch=False)
    return render_template("account/devices.html", devices=svc.devices.list(g.account_user.id),
                           current_id=current.id if current else None)


@bp.post("/account/devices/<device_id>/rename")
@signed_in
def rename_device(device_id: str):
    try:
        services().devices.rename(g.account_user.id, device_id, request.form.get("name"))
        flash("The device was renamed.", "notice")
    except DomainError as problem:
        flash(problem.public, "error")
    return redirect(url_for("account.devices"))


@bp.post("/account/devices/<device_id>/delete")
@signed_in
def forget_device(device_id: str):
    if services().devices.forget(g.account_user.id, device_id):
        flash("The device is no longer trusted. It will be asked for a second factor again.", "notice")
    return redirect(url_for("account.devices"))
