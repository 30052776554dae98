"""/admin/logout-deliveries: the back-channel logout outbox, so an administrator sees which apps
were told, which are still being retried, and which gave up."""

from __future__ import annotations

from flask import render_template, request
from sqlalchemy import func, select

from idp.admin import bp
from idp.admin.guards import admin_page
from idp.extensions import db
from idp.storage.models import Client, LogoutDelivery

STATUSES = ("pending", "delivered", "failed")
PAGE_SIZE = 100


@bp.get("/admin/logout-deliveries")
@admin_page
def logout_deliveries():
    status = request.args.get("status")
    query = (
        select(LogoutDelivery, Client.name)
        .join(Client, Client.client_id == LogoutDelivery.client_id)
        .order_by(LogoutDelivery.created_at.desc())
        .limit(PAGE_SIZE)
    )
    if status in STATUSES:
        query = query.where(LogoutDelivery.status == status)
    rows = db.session.execute(query).all()
    counts = dict(db.session.execute(
        select(LogoutDelivery.status, func.count()).group_by(LogoutDelivery.status)).all())
    return render_template("admin/logout_deliveries.html", rows=rows, counts=counts, status=status,
                           statuses=STATUSES)
