"""The OpenAPI document of /api, served at /api/openapi.json; tests hold it to what the server does."""

from __future__ import annotations

from flask import jsonify

from idp.api import bp
from idp.services import services

_ERROR = {"$ref": "#/components/schemas/Error"}
# RFC 6750 §3: 401 and 403 answers carry a Bearer challenge.
_CHALLENGE = {"WWW-Authenticate": {"description": "RFC 6750 Bearer challenge", "schema": {"type": "string"}}}


def _responses(ok: dict | None, *statuses: int, ok_status: str = "200") -> dict:
    responses = {ok_status: ok or {"description": "Done"}}
    texts = {400: "Bad request", 401: "Missing, invalid or revoked token", 403: "Token lacks the scope or rights",
             404: "Not found", 409: "Conflict with the current state"}
    for status in statuses:
        responses[str(status)] = {"description": texts[status],
                                  "content": {"application/json": {"schema": _ERROR}}}
        if status == 401:
            responses[str(status)]["headers"] = _CHALLENGE
    return responses


def _json(schema_ref: str, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


def _op(summary: str, scope: str, responses: dict, params=(), body=None) -> dict:
    # OpenAPI 3.0.3 §4.8.30: scopes may only be named for oauth2 / openIdConnect schemes.
    op = {"summary": summary, "security": [{"oauth2": [scope]}], "responses": responses}
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                            for p in params]
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _security_schemes(issuer: str) -> dict:
    """Bearer JWT access tokens (RFC 9068) from this IdP, checked against revocation on every call."""
    scopes = {"sessions": "See and end the signed-in person's sessions and trusted devices (/api/me)",
              "admin": "Administer accounts (/api/admin); only administrators and admin clients get it"}
    return {"oauth2": {
        "type": "oauth2",
        "description": "Send the access token as `Authorization: Bearer <token>`.",
        "flows": {
            "authorizationCode": {"authorizationUrl": f"{issuer}/authorize", "tokenUrl": f"{issuer}/token",
                                  "refreshUrl": f"{issuer}/token", "scopes": scopes},
            "clientCredentials": {"tokenUrl": f"{issuer}/token", "scopes": {"admin": scopes["admin"]}},
        },
    }}


def document(issuer: str = "http://localhost:5000") -> dict:
    me, admin = "sessions", "admin"
    device_ref = "#/components/schemas/TrustedDevice"
    return {
        "openapi": "3.0.3",
        "info": {"title": "idp API", "version": "1",
                 "description": "Errors are JSON {\"error\", \"error_description\"} with the HTTP status."},
        "servers": [{"url": issuer}],
        "components": {
            "securitySchemes": _security_schemes(issuer),
            "schemas": {
                "Error": {"type": "object", "required": ["error", "error_description"],
                          "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}},
                "Device": {"type": "object", "required": ["model", "os", "browser"], "properties": {
                    "model": {"type": "string", "nullable": True}, "os": {"type": "string", "nullable": True},
                    "browser": {"type": "string", "nullable": True}}},
                "Session": {"type": "object", "required": ["id", "current", "created_at", "last_active_at", "ip",
                                                           "user_agent", "device", "app", "clients", "amr", "acr"],
                            "properties": {
                                "id": {"type": "string"}, "current": {"type": "boolean"},
                                "created_at": {"type": "string", "format": "date-time"},
                                "last_active_at": {"type": "string", "format": "date-time"},
                                "ip": {"type": "string", "nullable": True},
                                "user_agent": {"type": "string", "nullable": True},
                                "device": {"$ref": "#/components/schemas/Device"},
                                "app": {"type": "object", "nullable": True, "required": ["name", "version"],
                                        "description": "The relying app first signed in with this session, and "
                                                       "the app version it sent (authorization parameter "
                                                       "app_version); null when no app has signed in",
                                        "properties": {
                                            "name": {"type": "string", "nullable": True},
                                            "version": {"type": "string", "nullable": True}}},
                                "clients": {"type": "array", "items": {
                                    "type": "object", "required": ["client_id", "name", "signed_in_at"],
                                    "properties": {
                                        "client_id": {"type": "string"}, "name": {"type": "string"},
                                        "signed_in_at": {"type": "string", "format": "date-time"}}}},
                                "amr": {"type": "array", "items": {"type": "string"}},
                                "acr": {"type": "string"}}},
                "SessionList": {"type": "object", "required": ["sessions"], "properties": {
                    "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}}}},
                "TrustedDevice": {"type": "object",
                                  "required": ["id", "name", "created_at", "last_used_at", "expires_at", "ip",
                                               "device"],
                                  "properties": {
                                      "id": {"type": "string"}, "name": {"type": "string"},
                                      "created_at": {"type": "string", "format": "date-time"},
                                      "last_used_at": {"type": "string", "format": "date-time"},
                                      "expires_at": {"type": "string", "format": "date-time"},
                                      "ip": {"type": "string", "nullable": True},
                                      "device": {"$ref": "#/components/schemas/Device"}}},
                "DeviceList": {"type": "object", "required": ["devices"], "properties": {
                    "devices": {"type": "array", "items": {"$ref": device_ref}}}},
                "User": {"type": "object",
                         "required": ["id", "email", "email_verified", "name", "phone", "phone_verified", "is_admin",
                                      "locked", "locked_at", "created_at"],
                         "properties": {
                             "id": {"type": "string"}, "email": {"type": "string"},
                             "email_verified": {"type": "boolean"},
                             "name": {"type": "string", "nullable": True},
                             "phone": {"type": "string", "nullable": True},
                             "phone_verified": {"type": "boolean"}, "is_admin": {"type": "boolean"},
                             "locked": {"type": "boolean"},
                             "locked_at": {"type": "string", "format": "date-time", "nullable": True},
                             "created_at": {"type": "string", "format": "date-time"},
                             "second_factors": {"type": "array", "description": "Only in GET /api/admin/users/{id}",
                                                "items": {"type": "string",
                                                          "enum": ["webauthn", "totp", "sms", "email"]}}}},
                "UserList": {"type": "object", "required": ["users"], "properties": {
                    "users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}},
                "Event": {"type": "object",
                          "required": ["id", "occurred_at", "event", "actor", "session_id", "client_id", "ip",
                                       "user_agent", "details"],
                          "properties": {
                              "id": {"type": "string"}, "occurred_at": {"type": "string", "format": "date-time"},
                              "event": {"type": "string"},
                              "actor": {"type": "object", "required": ["type", "id"], "properties": {
                                  "type": {"type": "string", "enum": ["user", "admin", "client", "system"]},
                                  "id": {"type": "string", "nullable": True}}},
                              "session_id": {"type": "string", "nullable": True},
                              "client_id": {"type": "string", "nullable": True},
                              "ip": {"type": "string", "nullable": True},
                              "user_agent": {"type": "string", "nullable": True},
                              "details": {"type": "object",
                                          "description": "Event-specific, e.g. `reason` of session_ended"}}},
                "EventList": {"type": "object", "required": ["events"], "properties": {
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}},
                "Count": {"type": "object", "required": ["ended"], "properties": {"ended": {"type": "integer"}}},
                "MfaReset": {"type": "object", "required": ["factors_removed", "devices_forgotten", "sessions_ended"],
                             "properties": {
                                 "factors_removed": {"type": "array", "items": {"type": "string"}},
                                 "devices_forgotten": {"type": "integer"},
                                 "sessions_ended": {"type": "integer"}}},
                "Locked": {"type": "object", "required": ["locked", "sessions_ended"], "properties": {
                    "locked": {"type": "boolean", "enum": [True]}, "sessions_ended": {"type": "integer"}}},
                "Unlocked": {"type": "object", "required": ["locked"], "properties": {
                    "locked": {"type": "boolean", "enum": [False]}}},
                "Invitation": {"type": "object",
                               "required": ["id", "email", "name", "is_admin", "status", "invited_by", "created_at",
                                            "expires_at", "accepted_at", "cancelled_at"],
                               "properties": {
                                   "id": {"type": "string"}, "email": {"type": "string"},
                                   "name": {"type": "string", "nullable": True},
                                   "is_admin": {"type": "boolean"},
                                   "status": {"type": "string",
                                              "enum": ["pending", "expired", "accepted", "cancelled"]},
                                   "invited_by": {"type": "string", "nullable": True,
                                                  "description": "The administrator's user id or the admin client id"},
                                   "created_at": {"type": "string", "format": "date-time"},
                                   "expires_at": {"type": "string", "format": "date-time"},
                                   "accepted_at": {"type": "string", "format": "date-time", "nullable": True},
                                   "cancelled_at": {"type": "string", "format": "date-time", "nullable": True}}},
                "InvitationList": {"type": "object", "required": ["invitations"], "properties": {
                    "invitations": {"type": "array", "items": {"$ref": "#/components/schemas/Invitation"}}}},
                "Revoked": {"type": "object", "required": ["revoked"], "properties": {
                    "revoked": {"type": "boolean",
                                "description": "false when the token is unknown (nothing to revoke)"}}},
            },
        },
        "paths": {
            "/api/openapi.json": {"get": {"summary": "This document", "security": [],
                                          "responses": {"200": {"description": "The OpenAPI document",
                                                                "content": {"application/json": {
                                                                    "schema": {"type": "object"}}}}}}},
            "/api/me/sessions": {"get": _op("The signed-in person's open sessions", me,
                                            _responses(_json("#/components/schemas/SessionList"), 401, 403))},
            "/api/me/sessions/{id}": {"delete": _op("End one of the person's sessions", me,
                                                    _responses({"description": "Ended"}, 401, 403, 404,
                                                               ok_status="204"), ["id"])},
            "/api/me/sessions/terminate-others": {"post": _op(
                "End every session but the one the token belongs to", me,
                _responses(_json("#/components/schemas/Count"), 401, 403))},
            "/api/me/devices": {"get": _op("The person's trusted devices", me,
                                           _responses(_json("#/components/schemas/DeviceList"), 401, 403))},
            "/api/me/devices/{id}": {
                "patch": _op("Rename a trusted device", me, _responses(_json(device_ref), 400, 401, 403, 404),
                             ["id"], {"type": "object", "required": ["name"],
                                      "properties": {"name": {"type": "string"}}}),
                "delete": _op("Stop trusting a device", me,
                              _responses({"description": "Forgotten"}, 401, 403, 404, ok_status="204"), ["id"]),
            },
            "/api/admin/users": {"get": {**_op("Find a user by email", admin,
                                               _responses(_json("#/components/schemas/UserList"), 400, 401, 403)),
                                         "parameters": [{"name": "email", "in": "query", "required": True,
                                                         "schema": {"type": "string"}}]}},
            "/api/admin/users/{id}": {
                "get": _op("One user", admin, _responses(_json("#/components/schemas/User"), 401, 403, 404), ["id"]),
                "delete": _op("Delete the account: every session ends (apps get back-channel logout), then the "
                              "user and its tokens, factors and devices go; the audit trail keeps a tombstone. "
                              "409 for the last administrator", admin,
                              _responses({"description": "Deleted"}, 401, 403, 404, 409, ok_status="204"), ["id"]),
            },
            "/api/admin/users/{id}/sessions": {"get": _op(
                "A user's open sessions", admin,
                _responses(_json("#/components/schemas/SessionList"), 401, 403, 404), ["id"])},
            "/api/admin/users/{id}/events": {"get": _op(
                "A user's audit trail, newest first", admin,
                _responses(_json("#/components/schemas/EventList"), 401, 403, 404), ["id"])},
            "/api/admin/sessions/{id}": {"delete": _op(
                "End any session", admin, _responses({"description": "Ended"}, 401, 403, 404, ok_status="204"),
                ["id"])},
            "/api/admin/users/{id}/logout": {"post": _op(
                "End every session of a user", admin, _responses(_json("#/components/schemas/Count"), 401, 403,
                                                                 404), ["id"])},
            "/api/admin/users/{id}/mfa/reset": {"post": _op(
                "Remove second factors and trusted devices, end sessions", admin,
                _responses(_json("#/components/schemas/MfaReset"), 401, 403, 404), ["id"])},
            "/api/admin/users/{id}/lock": {"post": _op(
                "Lock the account and end its sessions", admin,
                _responses(_json("#/components/schemas/Locked"), 401, 403, 404, 409), ["id"])},
            "/api/admin/users/{id}/unlock": {"post": _op(
                "Unlock the account", admin,
                _responses(_json("#/components/schemas/Unlocked"), 401, 403, 404, 409), ["id"])},
            "/api/admin/invitations": {
                "get": _op("Invitations neither accepted nor cancelled, newest first", admin,
                           _responses(_json("#/components/schemas/InvitationList"), 401, 403)),
                "post": _op("Invite a person by email: a single-use set-password link, valid 7 days by default",
                            admin, _responses(_json("#/components/schemas/Invitation", "Invited"), 400, 401, 403,
                                              409, ok_status="201"), (),
                            {"type": "object", "required": ["email"], "properties": {
                                "email": {"type": "string"}, "name": {"type": "string", "nullable": True},
                                "admin": {"type": "boolean", "default": False}}}),
            },
            "/api/admin/invitations/{id}": {"delete": _op(
                "Cancel an invitation; its link stops working", admin,
                _responses({"description": "Cancelled"}, 401, 403, 404, 409, ok_status="204"), ["id"])},
            "/api/admin/tokens/revoke": {"post": _op(
                "Revoke an access or refresh token", admin,
                _responses(_json("#/components/schemas/Revoked"), 400, 401, 403), (),
                {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}})},
        },
    }


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(document(services().settings.issuer))
