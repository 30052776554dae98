"""The OpenAPI document of /api, served at /api/openapi.json; tests hold it to what the server does."""

from __future__ import annotations

from flask import jsonify

from idp.api import bp

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok: dict | None, *statuses: int, ok_status: str = "200") -> dict:
    responses = {ok_status: ok or {"description": "Done"}}
    texts = {400: "Bad request", 401: "Missing, invalid or revoked token", 403: "Token lacks the scope or rights",
             404: "Not found", 409: "Conflict with the current state"}
    for status in statuses:
        responses[str(status)] = {"description": texts[status],
                                  "content": {"application/json": {"schema": _ERROR}}}
    return responses


def _json(schema_ref: str, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


def _op(summary: str, scope: str, responses: dict, params=(), body=None) -> dict:
    op = {"summary": summary, "security": [{"bearer": [scope]}], "responses": responses}
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                            for p in params]
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def document() -> dict:
    me, admin = "sessions", "admin"
    device_ref = "#/components/schemas/TrustedDevice"
    return {
        "openapi": "3.0.3",
        "info": {"title": "idp API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "error_description"],
                          "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}},
                "Device": {"type": "object", "properties": {
                    "model": {"type": "string", "nullable": True}, "os": {"type": "string", "nullable": True},
                    "browser": {"type": "string", "nullable": True}}},
                "Session": {"type": "object", "required": ["id", "current", "created_at", "last_active_at", "ip",
                                                           "device", "app", "clients"],
                            "properties": {
                                "id": {"type": "string"}, "current": {"type": "boolean"},
                                "created_at": {"type": "string", "format": "date-time"},
                                "last_active_at": {"type": "string", "format": "date-time"},
                                "ip": {"type": "string", "nullable": True},
                                "user_agent": {"type": "string", "nullable": True},
                                "device": {"$ref": "#/components/schemas/Device"},
                                "app": {"type": "object", "nullable": True, "properties": {
                                    "name": {"type": "string", "nullable": True},
                                    "version": {"type": "string", "nullable": True}}},
                                "clients": {"type": "array", "items": {"type": "object", "properties": {
                                    "client_id": {"type": "string"}, "name": {"type": "string"},
                                    "signed_in_at": {"type": "string", "format": "date-time"}}}},
                                "amr": {"type": "array", "items": {"type": "string"}},
                                "acr": {"type": "string"}}},
                "SessionList": {"type": "object", "required": ["sessions"], "properties": {
                    "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}}}},
                "TrustedDevice": {"type": "object", "required": ["id", "name"], "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "last_used_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "ip": {"type": "string", "nullable": True},
                    "device": {"$ref": "#/components/schemas/Device"}}},
                "DeviceList": {"type": "object", "required": ["devices"], "properties": {
                    "devices": {"type": "array", "items": {"$ref": device_ref}}}},
                "User": {"type": "object", "required": ["id", "email"], "properties": {
                    "id": {"type": "string"}, "email": {"type": "string"}, "email_verified": {"type": "boolean"},
                    "name": {"type": "string", "nullable": True}, "phone": {"type": "string", "nullable": True},
                    "phone_verified": {"type": "boolean"}, "is_admin": {"type": "boolean"},
                    "locked": {"type": "boolean"}, "locked_at": {"type": "string", "nullable": True},
                    "created_at": {"type": "string", "format": "date-time"},
                    "second_factors": {"type": "array", "items": {"type": "string"}}}},
                "UserList": {"type": "object", "required": ["users"], "properties": {
                    "users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}},
                "EventList": {"type": "object", "required": ["events"], "properties": {"events": {
                    "type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "occurred_at": {"type": "string", "format": "date-time"},
                        "event": {"type": "string"}, "actor": {"type": "object"},
                        "session_id": {"type": "string", "nullable": True},
                        "client_id": {"type": "string", "nullable": True},
                        "ip": {"type": "string", "nullable": True},
                        "user_agent": {"type": "string", "nullable": True},
                        "details": {"type": "object"}}}}}},
                "Count": {"type": "object", "properties": {"ended": {"type": "integer"}}},
                "Object": {"type": "object"},
            },
        },
        "paths": {
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
            "/api/admin/users/{id}": {"get": _op("One user", admin,
                                                 _responses(_json("#/components/schemas/User"), 401, 403, 404),
                                                 ["id"])},
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
                _responses(_json("#/components/schemas/Object"), 401, 403, 404), ["id"])},
            "/api/admin/users/{id}/lock": {"post": _op(
                "Lock the account and end its sessions", admin,
                _responses(_json("#/components/schemas/Object"), 401, 403, 404, 409), ["id"])},
            "/api/admin/users/{id}/unlock": {"post": _op(
                "Unlock the account", admin,
                _responses(_json("#/components/schemas/Object"), 401, 403, 404, 409), ["id"])},
            "/api/admin/tokens/revoke": {"post": _op(
                "Revoke an access or refresh token", admin,
                _responses(_json("#/components/schemas/Object"), 400, 401, 403), (),
                {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}})},
        },
    }


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(document())
