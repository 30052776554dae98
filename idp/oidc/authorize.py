"""The authorization request as a list of single checks, read top to bottom.

Until the client and its redirect URI are known good, every problem is shown on our own error
page (RFC 6749 §4.1.2.1); after that, errors go back to the client with `state` and `iss`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from idp.crypto.keys import InvalidJWT
from idp.domain.acr import ACR_VALUES_SUPPORTED
from idp.oidc.client import redirect_uri_matches
from idp.services.clients import ClientSnapshot

SINGLE_VALUE_PARAMS = (
    "client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "prompt", "max_age",
    "login_hint", "id_token_hint", "acr_values", "ui_locales", "claims_locales", "code_challenge",
    "code_challenge_method", "response_mode", "display", "claims", "request", "request_uri", "app_version",
)  # fmt: skip
PROMPT_VALUES = {"none", "login", "consent", "select_account"}
# RFC 7636 §4.2: an S256 challenge is the base64url SHA-256 of the verifier: exactly 43 characters.
S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")  # used with fullmatch: "$" lets a final newline through
MAX_PARAM_LENGTH = 4096
MAX_AGE = re.compile(r"[0-9]{1,10}")


class ErrorPage(Exception):
    """Shown to the person; never redirected, because the redirect target is not trusted."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class RedirectError(Exception):
    """Sent back to the (validated) redirect URI as an OAuth error."""

    def __init__(self, error: str, description: str, request: AuthorizationRequest | None = None, **target):
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect_uri = request.redirect_uri if request else target["redirect_uri"]
        self.state = request.state if request else target.get("state")


@dataclass
class AuthorizationRequest:
    client: ClientSnapshot
    redirect_uri: str
    state: str | None
    scope: str = ""
    nonce: str | None = None
    prompt: set[str] = field(default_factory=set)
    max_age: int | None = None
    login_hint: str | None = None
    id_token_hint_sub: str | None = None
    acr_values: list[str] = field(default_factory=list)
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    app_version: str | None = None
    params: dict = field(default_factory=dict)

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()


def first_values(values) -> dict:
    """The parameters to keep for a resumed request: first value of each known parameter."""
    return {k: values.get(k) for k in SINGLE_VALUE_PARAMS if values.get(k) is not None}


def parse_authorization_request(values, clients, key_ring) -> AuthorizationRequest:
    client = _client(values, clients)
    redirect_uri = _redirect_uri(values, client)
    state = values.get("state")
    if len(values.getlist("state")) > 1:
        state = None
    request = AuthorizationRequest(client=client, redirect_uri=redirect_uri, state=state, params=first_values(values))
    for check in (
        _no_repeated_parameters,
        _no_oversized_parameters,
        _no_request_objects,
        _response_type,
        _response_mode,
        _scope,
        _prompt,
        _max_age,
        _pkce,
        _claims_parameter,
        _plain_fields,
    ):
        check(values, request)
    _id_token_hint(values, request, key_ring)
    return request


def _client(values, clients) -> ClientSnapshot:
    client_ids = values.getlist("client_id")
    if not client_ids or not client_ids[0]:
        raise ErrorPage("The application did not say who it is (missing client_id).")
    if len(client_ids) > 1:
        raise ErrorPage("The request names more than one application (repeated client_id).")
    client = clients.snapshot(client_ids[0])
    if client is None:
        raise ErrorPage("This application is not registered here (unknown client_id).")
    return client


def _redirect_uri(values, client: ClientSnapshot) -> str:
    uris = values.getlist("redirect_uri")
    if not uris or not uris[0]:
        raise ErrorPage("The application did not say where to return (missing redirect_uri).")
    if len(uris) > 1:
        raise ErrorPage("The request names more than one return address (repeated redirect_uri).")
    if not redirect_uri_matches(client.redirect_uris, uris[0]):
        raise ErrorPage("The return address does not match any address registered for this application.")
    return uris[0]


def _no_repeated_parameters(values, request) -> None:
    for name in SINGLE_VALUE_PARAMS:
        if len(values.getlist(name)) > 1:
            raise RedirectError("invalid_request", f"The parameter '{name}' appears more than once.", request)


def _no_oversized_parameters(values, request) -> None:
    for name in SINGLE_VALUE_PARAMS:
        value = values.get(name)
        if value is not None and len(value) > MAX_PARAM_LENGTH:
            raise RedirectError("invalid_request", f"The parameter '{name}' is too long.", request)


def _no_request_objects(values, request) -> None:
    if values.get("request") is not None:
        raise RedirectError("request_not_supported", "Request objects are not supported.", request)
    if values.get("request_uri") is not None:
        raise RedirectError("request_uri_not_supported", "Request URIs are not supported.", request)


def _response_type(values, request) -> None:
    response_type = values.get("response_type")
    if not response_type:
        raise RedirectError("invalid_request", "Missing 'response_type'.", request)
    if response_type != "code":
        raise RedirectError("unsupported_response_type", "Only response_type=code is supported.", request)
    if "authorization_code" not in request.client.grant_types:
        raise RedirectError("unauthorized_client", "This client may not use the authorization code flow.", request)


def _response_mode(values, request) -> None:
    if values.get("response_mode") not in (None, "query"):
        raise RedirectError("invalid_request", "Only response_mode=query is supported.", request)


def _scope(values, request) -> None:
    requested = list(dict.fromkeys((values.get("scope") or "").split()))
    if not requested:
        raise RedirectError("invalid_scope", "Missing 'scope'.", request)
    allowed = set(request.client.scope.split())
    unknown = [s for s in requested if s not in allowed]
    if unknown:
        raise RedirectError("invalid_scope", f"Scope not allowed for this client: {' '.join(unknown)}", request)
    request.scope = " ".join(requested)


def _prompt(values, request) -> None:
    prompt = set((values.get("prompt") or "").split())
    if not prompt <= PROMPT_VALUES:
        raise RedirectError("invalid_request", "Unknown 'prompt' value.", request)
    if "none" in prompt and len(prompt) > 1:
        raise RedirectError("invalid_request", "prompt=none cannot be combined with other values.", request)
    request.prompt = prompt


def _max_age(values, request) -> None:
    raw = values.get("max_age")
    if raw is None or raw == "":
        return
    # ASCII digits only: str.isdigit() also accepts "²" (which int() rejects) and other scripts' digits.
    if not MAX_AGE.fullmatch(raw):
        raise RedirectError("invalid_request", "'max_age' must be a non-negative whole number of seconds.", request)
    request.max_age = int(raw)


def _pkce(values, request) -> None:
    challenge = values.get("code_challenge")
    method = values.get("code_challenge_method")
    if challenge is None:
        if method is not None:
            raise RedirectError("invalid_request", "'code_challenge_method' without 'code_challenge'.", request)
        if request.client.is_public:
            raise RedirectError("invalid_request", "Public clients must use PKCE (code_challenge).", request)
        return
    if method != "S256":
        raise RedirectError("invalid_request", "Only code_challenge_method=S256 is supported.", request)
    if not S256_CHALLENGE.fullmatch(challenge):
        raise RedirectError("invalid_request", "Malformed 'code_challenge'.", request)
    request.code_challenge = challenge
    request.code_challenge_method = method


def _claims_parameter(values, request) -> None:
    raw = values.get("claims")
    if raw is None:
        return
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise RedirectError("invalid_request", "'claims' must be a JSON object.", request)


def _plain_fields(values, request) -> None:
    request.nonce = values.get("nonce") or None
    request.login_hint = (values.get("login_hint") or "").strip() or None
    request.acr_values = [v for v in (values.get("acr_values") or "").split() if v in ACR_VALUES_SUPPORTED]
    version = values.get("app_version")
    request.app_version = version[:64] if version else None


def _id_token_hint(values, request, key_ring) -> None:
    hint = values.get("id_token_hint")
    if not hint:
        return
    try:
        # Expired hints are accepted: the hint names a person, it grants nothing.
        _, claims = key_ring.verify(hint, typ="JWT")
    except InvalidJWT:
        raise RedirectError("invalid_request", "The id_token_hint is not a valid ID token from this server.", request)
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise RedirectError("invalid_request", "The id_token_hint has no subject.", request)
    request.id_token_hint_sub = sub


_ILLEGAL_DESCRIPTION_CHARS = re.compile(r"[^\x20-\x21\x23-\x5B\x5D-\x7E]")


def safe_description(text: str) -> str:
    """RFC 6749 §4.1.2.1: error_description uses printable ASCII without quote or backslash."""
    return _ILLEGAL_DESCRIPTION_CHARS.sub("", text)[:300]


def redirect_with(redirect_uri: str, params: dict) -> str:
    """Add response parameters to the redirect URI, keeping any query it was registered with."""
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((k, v) for k, v in params.items() if v is not None)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
