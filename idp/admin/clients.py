"""/admin/clients: register relying apps, edit them, give them a new secret, delete them.
A secret is shown once, in the response that made it; the server keeps only its keyed hash."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from idp.admin import bp
from idp.admin.guards import admin_action, admin_page, audit_client_change
from idp.domain.errors import DomainError, NotFound
from idp.services import services
from idp.services.clients import AUTH_METHODS, DEFAULT_GRANT_TYPES, DEFAULT_SCOPE, EDITABLE_FIELDS, GRANT_TYPES, SCOPES

CHOICES = {
    "grant_types": GRANT_TYPES,
    "auth_methods": [m for m in AUTH_METHODS if m != "none"],
    "algs": ("ES256", "RS256"),
    "scopes": SCOPES,
}


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _submitted() -> dict:
    """The client form as service fields; the service checks them."""
    form = request.form
    return {
        "name": form.get("name", ""),
        "redirect_uris": _lines(form.get("redirect_uris")),
        "post_logout_redirect_uris": _lines(form.get("post_logout_redirect_uris")),
        "backchannel_logout_uri": form.get("backchannel_logout_uri", "").strip() or None,
        "grant_types": form.getlist("grant_types"),
        "scope": form.get("scope", "").strip(),
        "first_party": form.get("first_party") == "1",
        "token_endpoint_auth_method": form.get("token_endpoint_auth_method") or None,
        "id_token_signed_response_alg": form.get("id_token_signed_response_alg") or None,
    }


def _registered(client) -> dict:
    return {field: getattr(client, field) for field in EDITABLE_FIELDS}


def _client(client_id: str):
    client = services().clients.get(client_id)
    if client is None:
        raise NotFound("There is no client with this id.")
    return client


@bp.get("/admin/clients")
@admin_page
def clients():
    return render_template("admin/clients.html", clients=services().clients.list())


@bp.get("/admin/clients/new")
@admin_page
def new_client():
    values = {"grant_types": list(DEFAULT_GRANT_TYPES), "scope": DEFAULT_SCOPE, "public": False,
              "id_token_signed_response_alg": services().settings.default_signing_alg}
    return render_template("admin/client_new.html", values=values, choices=CHOICES, error=None)


@bp.post("/admin/clients/new")
@admin_action(back="admin.new_client")
def create_client():
    fields = {**_submitted(), "public": request.form.get("public") == "1"}
    try:
        created, secret = services().clients.create(**fields)
    except DomainError as problem:
        return render_template("admin/client_new.html", values=fields, choices=CHOICES, error=problem.public), 400
    audit_client_change("client_created", created.client_id, name=created.name, public=created.is_public,
                        grant_types=created.grant_types, scope=created.scope)
    if secret is None:
        flash("The public client was registered. It has no secret: it proves itself with PKCE.", "notice")
        return redirect(url_for("admin.client", client_id=created.client_id))
    return render_template("admin/client_secret.html", client=created, secret=secret, new=True)


@bp.get("/admin/clients/<client_id>")
@admin_page
def client(client_id: str):
    found = _client(client_id)
    return render_template("admin/client_edit.html", client=found, values=_registered(found), choices=CHOICES,
                           error=None)


@bp.post("/admin/clients/<client_id>")
@admin_action(back="admin.client")
def update_client(client_id: str):
    found = _client(client_id)
    fields = _submitted()
    try:
        changes = services().clients.update(client_id, **fields)
    except DomainError as problem:
        return render_template("admin/client_edit.html", client=found, values=fields, choices=CHOICES,
                               error=problem.public), 400
    if changes:
        audit_client_change("client_updated", client_id, changes=changes)
        flash(f"Saved: {', '.join(name.replace('_', ' ') for name in changes)}.", "notice")
    else:
        flash("Nothing was changed.", "notice")
    return redirect(url_for("admin.client", client_id=client_id))


@bp.post("/admin/clients/<client_id>/secret")
@admin_action(back="admin.client")
def rotate_client_secret(client_id: str):
    found = _client(client_id)
    try:
        secret = services().clients.rotate_secret(client_id)
    except DomainError as problem:
        flash(problem.public, "error")
        return redirect(url_for("admin.client", client_id=client_id))
    audit_client_change("client_secret_rotated", client_id)
    return render_template("admin/client_secret.html", client=found, secret=secret, new=False)


@bp.post("/admin/clients/<client_id>/delete")
@admin_action(back="admin.client")
def delete_client(client_id: str):
    found = _client(client_id)
    name = found.name
    services().clients.delete(client_id)
    audit_client_change("client_deleted", client_id, name=name)
    flash(f"The client {name!r} was deleted; its tokens no longer work.", "notice")
    return redirect(url_for("admin.clients"))
