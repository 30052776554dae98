"""Access-token state in the shared store, and the per-process copies of clients.

Two app instances on one database and one Redis stand for two servers: what one of them revokes,
rotates or deletes, the other must honour on its very next request. The embedded backend has one
process only, so the cross-instance tests run on PostgreSQL + Redis.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from idp.extensions import db
from idp.storage.models import BrowserSession, RefreshToken, utcnow
from idp.storage.store import StoreUnavailable
from tests.integration.mfa_support import services_of
from tests.support import PASSWORD, OIDCBrowser, bearer, introspect, jwt_payload, refresh, revoke, token_request


def _machine(app, scope="admin"):
    with app.app_context():
        client, secret = services_of(app).clients.create(name="Alarm receiver", grant_types=["client_credentials"],
                                                         scope=scope)
        return {"client_id": client.client_id, "client_secret": secret}


def _app_client(app):
    with app.app_context():
        client, secret = services_of(app).clients.create(
            name="Alarm panel app", redirect_uris=["https://rp.example/cb"], first_party=True,
            scope="openid profile email offline_access")
        return {"client_id": client.client_id, "client_secret": secret, "redirect_uri": "https://rp.example/cb"}


def _user(app, email="alice@example.com"):
    with app.app_context():
        services_of(app).accounts.create_user(email, PASSWORD, "Alice")


def _cc_token(app, machine):
    response = token_request(app.test_client(), machine, {"grant_type": "client_credentials"})
    return response


def _signed_in_tokens(app, rp, email="alice@example.com") -> dict:
    browser = OIDCBrowser(app.test_client())
    code = browser.login_and_get_code(rp, email, scope="openid profile offline_access")["code"]
    response = browser.exchange(rp, code)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


@pytest.fixture
def two_instances(make_app, backend):
    if backend != "postgres":
        pytest.skip("the in-process store serves one process only (SPEC §1)")
    first = make_app()
    second = make_app(redis_prefix=first.extensions["idp"].settings.redis_prefix)
    return first, second


# -- clients: copies per process, checked against the shared generation -------------------------------


def test_a_secret_rotated_on_one_instance_stops_working_on_the_other_at_once(two_instances):
    first, second = two_instances
    machine = _machine(first)
    assert _cc_token(first, machine).status_code == 200  # the first instance now holds a copy
    with second.app_context():
        new_secret = services_of(second).clients.rotate_secret(machine["client_id"])
    assert _cc_token(first, machine).status_code == 401
    assert _cc_token(first, {**machine, "client_secret": new_secret}).status_code == 200


def test_a_scope_narrowed_on_one_instance_applies_on_the_other_at_once(two_instances):
    first, second = two_instances
    machine = _machine(first, scope="admin sessions")
    assert token_request(first.test_client(), machine, {"grant_type": "client_credentials",
                                                         "scope": "admin"}).status_code == 200
    with second.app_context():
        services_of(second).clients.update(machine["client_id"], scope="sessions")
    narrowed = token_request(first.test_client(), machine, {"grant_type": "client_credentials", "scope": "admin"})
    assert narrowed.status_code == 400 and narrowed.json["error"] == "invalid_scope"


def test_a_client_deleted_on_one_instance_loses_its_tokens_on_the_other(two_instances):
    first, second = two_instances
    machine, observer = _machine(first), _machine(first)
    token = _cc_token(first, machine).json["access_token"]
    assert introspect(first.test_client(), machine, token).json["active"] is True
    with second.app_context():
        services_of(second).clients.delete(machine["client_id"])
    assert _cc_token(first, machine).status_code == 401
    with first.app_context():
        assert services_of(first).grants.active_access_token(token) is None
    # An introspecting client other than the owner never learns of it either way.
    assert introspect(first.test_client(), observer, token).json == {"active": False}


def test_a_grant_type_added_on_one_instance_is_usable_on_the_other_at_once(two_instances):
    # The refusal comes from the first instance's copy; it must be checked against the generation
    # before it is answered, or the app would be refused on old terms until the copy is renewed.
    first, second = two_instances
    rp = _app_client(first)
    refused = _cc_token(first, rp)
    assert refused.status_code == 400 and refused.json["error"] == "unauthorized_client"
    with second.app_context():
        services_of(second).clients.update(rp["client_id"], grant_types=["authorization_code", "refresh_token",
                                                                          "client_credentials"])
    assert _cc_token(first, rp).status_code == 200


def test_a_refresh_answered_from_a_stale_copy_runs_again_and_rotates_once(two_instances):
    first, second = two_instances
    rp = _app_client(first)
    _user(first)
    tokens = _signed_in_tokens(first, rp)
    rotated = refresh(second.test_client(), rp, tokens["refresh_token"])  # the second instance holds a copy
    assert rotated.status_code == 200
    with first.app_context():
        services_of(first).clients.update(rp["client_id"], name="Alarm panel app 2")
    # The copy is found stale when the new access token is recorded, after the refresh token was
    # consumed: the token is put back and the grant runs again from the database, and this is no
    # reuse of the token.
    again = refresh(second.test_client(), rp, rotated.json["refresh_token"])
    assert again.status_code == 200, again.json
    assert introspect(second.test_client(), rp, again.json["access_token"]).json["active"] is True
    assert refresh(second.test_client(), rp, again.json["refresh_token"]).status_code == 200
    replayed = refresh(second.test_client(), rp, rotated.json["refresh_token"])
    assert replayed.status_code == 400 and replayed.json["error"] == "invalid_grant"


def test_an_old_secret_cannot_introspect_through_a_stale_copy(two_instances):
    first, second = two_instances
    machine = _machine(first)
    token = _cc_token(first, machine).json["access_token"]
    assert introspect(first.test_client(), machine, token).json["active"] is True
    with second.app_context():
        new_secret = services_of(second).clients.rotate_secret(machine["client_id"])
    refused = introspect(first.test_client(), machine, token)
    assert refused.status_code == 401 and refused.json["error"] == "invalid_client"
    assert introspect(first.test_client(), {**machine, "client_secret": new_secret}, token).json["active"] is True


def test_a_copy_is_not_trusted_once_the_store_forgets_the_generation(two_instances, redis_url):
    import redis

    first, second = two_instances
    machine = _machine(first)
    assert _cc_token(first, machine).status_code == 200
    prefix = first.extensions["idp"].settings.redis_prefix
    raw = redis.Redis.from_url(redis_url)
    raw.delete(prefix + "clients:generation")  # as after a Redis restart …
    with second.app_context():  # … during which the secret is rotated straight in the database
        from idp.extensions import db
        from idp.storage.models import Client

        db.session.get(Client, machine["client_id"]).secret_hash = "0" * 64
        db.session.commit()
    assert _cc_token(first, machine).status_code == 401


# -- access tokens: revoked, ended or lost anywhere means inactive everywhere ---------------------------


def test_a_refresh_token_reused_on_one_instance_ends_its_access_tokens_on_the_other(two_instances):
    first, second = two_instances
    rp = _app_client(first)
    _user(first)
    tokens = _signed_in_tokens(first, rp)
    rotated = refresh(second.test_client(), rp, tokens["refresh_token"])
    assert rotated.status_code == 200
    assert introspect(first.test_client(), rp, rotated.json["access_token"]).json["active"] is True
    replayed = refresh(second.test_client(), rp, tokens["refresh_token"])
    assert replayed.status_code == 400 and replayed.json["error"] == "invalid_grant"
    for token in (tokens["access_token"], rotated.json["access_token"]):
        assert introspect(first.test_client(), rp, token).json == {"active": False}
        assert first.test_client().get("/userinfo", headers=bearer(token)).status_code == 401


def test_an_access_token_revoked_on_one_instance_is_inactive_on_the_other(two_instances):
    first, second = two_instances
    machine = _machine(first)
    token = _cc_token(first, machine).json["access_token"]
    revoked = token_request(second.test_client(), machine, {"token": token}, path="/revoke")
    assert revoked.status_code == 200
    assert introspect(first.test_client(), machine, token).json == {"active": False}


def test_a_token_whose_signature_was_already_checked_is_still_revoked_and_expires(make_app, monkeypatch):
    """The key ring keeps the access tokens it has verified (idp/crypto/keys.py); revocation, the end
    of the session and expiry are still asked on every call."""
    app = make_app()
    rp = _app_client(app)
    _user(app)
    client = app.test_client()
    first, second = _signed_in_tokens(app, rp), _signed_in_tokens(app, rp)
    for tokens in (first, second):
        for _ in range(2):
            assert introspect(client, rp, tokens["access_token"]).json["active"] is True
            assert client.get("/userinfo", headers=bearer(tokens["access_token"])).status_code == 200
    assert revoke(client, rp, first["refresh_token"]).status_code == 200  # the grant and its access tokens
    assert introspect(client, rp, first["access_token"]).json == {"active": False}
    assert client.get("/userinfo", headers=bearer(first["access_token"])).status_code == 401

    expires = jwt_payload(second["access_token"])["exp"]
    import idp.services.grants as grants_module

    monkeypatch.setattr(grants_module, "utcnow", lambda: utcnow().fromtimestamp(expires, utcnow().tzinfo))
    assert introspect(client, rp, second["access_token"]).json == {"active": False}
    assert client.get("/userinfo", headers=bearer(second["access_token"])).status_code == 401


def test_an_emptied_store_fails_closed_and_refresh_tokens_carry_on(make_app, backend, redis_url):
    app = make_app()
    rp = _app_client(app)
    _user(app)
    tokens = _signed_in_tokens(app, rp)
    store = app.extensions["idp"].store
    if backend == "postgres":
        import redis

        raw = redis.Redis.from_url(redis_url)
        for key in raw.scan_iter(app.extensions["idp"].settings.redis_prefix + "at:*"):
            raw.delete(key)
    else:
        store._data.clear()
    assert introspect(app.test_client(), rp, tokens["access_token"]).json == {"active": False}
    assert app.test_client().get("/userinfo", headers=bearer(tokens["access_token"])).status_code == 401
    renewed = refresh(app.test_client(), rp, tokens["refresh_token"])
    assert renewed.status_code == 200
    assert introspect(app.test_client(), rp, renewed.json["access_token"]).json["active"] is True


def test_an_access_token_never_outlives_its_session(make_app):
    # The session ends 5 minutes after sign-in, before a 10-minute access token would.
    app = make_app(session_absolute_ttl=300, access_token_ttl=600)
    rp = _app_client(app)
    _user(app)
    tokens = _signed_in_tokens(app, rp)
    claims = jwt_payload(tokens["access_token"])
    assert claims["exp"] - claims["iat"] <= 300
    assert tokens["expires_in"] <= 300
    with app.app_context():
        from idp.extensions import db
        from idp.storage.models import BrowserSession

        session = db.session.get(BrowserSession, claims["sid"])
        assert claims["exp"] <= int(session.expires_at.timestamp())


def test_the_record_must_match_the_session_the_token_names(make_app):
    """A record is only good for the token it was written for: the signed sid and the recorded one agree."""
    app = make_app()
    rp = _app_client(app)
    _user(app)
    tokens = _signed_in_tokens(app, rp)
    claims = jwt_payload(tokens["access_token"])
    with app.app_context():
        grants = services_of(app).grants
        assert grants.active_for_claims(claims) is not None
        assert grants.active_for_claims({**claims, "sid": "another-session"}) is None
        assert grants.active_for_claims({**claims, "jti": "unknown"}) is None
        # A token id is only good with the grant it names (whose revocation marker is checked with it).
        family_id, _, token_id = claims["jti"].rpartition(".")
        assert family_id and grants.active_for_claims({**claims, "jti": f"another-grant.{token_id}"}) is None


def test_a_refresh_counts_as_session_activity_once_per_touch_interval(make_app):
    from datetime import timedelta

    from idp.extensions import db
    from idp.storage.models import BrowserSession

    app = make_app(session_touch_interval=60)
    rp = _app_client(app)
    _user(app)
    tokens = _signed_in_tokens(app, rp)
    sid = jwt_payload(tokens["access_token"])["sid"]

    def last_active():
        with app.app_context():
            return db.session.get(BrowserSession, sid).last_active_at

    signed_in_at = last_active()
    tokens = refresh(app.test_client(), rp, tokens["refresh_token"]).json
    assert last_active() == signed_in_at, "within the touch interval nothing is written"

    with app.app_context():
        db.session.get(BrowserSession, sid).last_active_at = signed_in_at - timedelta(minutes=5)
        db.session.commit()
    assert refresh(app.test_client(), rp, tokens["refresh_token"]).status_code == 200
    assert last_active() > signed_in_at - timedelta(seconds=5)


def test_ending_all_of_a_users_sessions_ends_every_access_token_on_every_instance(two_instances):
    first, second = two_instances
    rp = _app_client(first)
    _user(first)
    phone, laptop = _signed_in_tokens(first, rp), _signed_in_tokens(first, rp)
    with second.app_context():
        svc = services_of(second)
        user = svc.accounts.find_by_email("alice@example.com")
        assert svc.sessions.end_all_for_user(user.id, "ended_by_admin") == 2
    for tokens in (phone, laptop):
        assert introspect(first.test_client(), rp, tokens["access_token"]).json == {"active": False}


def test_with_redis_down_the_token_endpoints_answer_503_and_never_active(make_app, backend):
    if backend != "postgres":
        pytest.skip("the in-process store cannot be unreachable")
    up = make_app()
    rp, machine = _app_client(up), _machine(up)
    _user(up)
    tokens = _signed_in_tokens(up, rp)
    down = make_app(redis_url="redis://127.0.0.1:1/0")  # the same database, Redis unreachable
    client = down.test_client()
    for response in (token_request(client, machine, {"grant_type": "client_credentials"}),
                     introspect(client, rp, tokens["access_token"]),
                     client.get("/userinfo", headers=bearer(tokens["access_token"])),
                     refresh(client, rp, tokens["refresh_token"])):
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.json["error"] == "temporarily_unavailable"
    assert refresh(up.test_client(), rp, tokens["refresh_token"]).status_code == 200  # once Redis is back


def test_a_refresh_through_a_session_idle_past_its_limit_is_refused_and_consumes_nothing(make_app):
    app = make_app()
    rp = _app_client(app)
    _user(app)
    tokens = _signed_in_tokens(app, rp)
    session_id = jwt_payload(tokens["access_token"])["sid"]
    idle = timedelta(seconds=services_of(app).settings.session_idle_ttl)

    def last_active(when):
        with app.app_context():
            db.session.execute(update(BrowserSession).where(BrowserSession.id == session_id)
                               .values(last_active_at=when))
            db.session.commit()

    # Not yet swept: the session is still open, but idle past its limit.
    last_active(utcnow() - idle - timedelta(seconds=1))
    assert refresh(app.test_client(), rp, tokens["refresh_token"]).json["error"] == "invalid_grant"
    # The refusal used nothing: within the limit again, the same token rotates, and is no replay.
    last_active(utcnow())
    assert refresh(app.test_client(), rp, tokens["refresh_token"]).status_code == 200


def _refresh_token_rows(app) -> dict:
    with app.app_context():
        return {row.token_hash: row.used_at for row in db.session.scalars(select(RefreshToken))}


def test_a_refresh_that_fails_after_consuming_its_token_puts_it_back(make_app, monkeypatch):
    app = make_app()
    rp = _app_client(app)
    _user(app)
    tokens = _signed_in_tokens(app, rp)
    stored = _refresh_token_rows(app)

    def store_fails(*args, **kwargs):
        raise StoreUnavailable("the store went away while the access token was recorded")

    # The token is consumed and its successor stored before the access token is recorded.
    monkeypatch.setattr(services_of(app).grants.access_tokens, "record", store_fails)
    failed = refresh(app.test_client(), rp, tokens["refresh_token"])
    assert failed.status_code == 503 and failed.json["error"] == "temporarily_unavailable"
    assert _refresh_token_rows(app) == stored  # unused again, and no successor left behind
    monkeypatch.undo()
    # So the app's retry rotates, and is not taken for a replay.
    retried = refresh(app.test_client(), rp, tokens["refresh_token"])
    assert retried.status_code == 200, retried.json
    assert introspect(app.test_client(), rp, retried.json["access_token"]).json["active"] is True
    assert refresh(app.test_client(), rp, tokens["refresh_token"]).json["error"] == "invalid_grant"
    assert introspect(app.test_client(), rp, retried.json["access_token"]).json == {"active": False}


# -- the same guarantees on a Sentinel-managed Redis and on a Redis Cluster ----------------------------


@pytest.mark.parametrize("topology", ["redis_sentinel", "redis_cluster"])
def test_two_instances_on_sentinel_or_cluster_share_tokens_revocations_and_client_changes(
        make_app, backend, topology, request):
    if backend != "postgres":
        pytest.skip("the in-process store serves one process only (SPEC §1)")
    url = request.getfixturevalue(topology).url
    first = make_app(redis_url=url)
    second = make_app(redis_url=url, redis_prefix=first.extensions["idp"].settings.redis_prefix)
    rp, machine = _app_client(first), _machine(first)
    _user(first)

    tokens = _signed_in_tokens(first, rp)
    assert introspect(second.test_client(), rp, tokens["access_token"]).json["active"] is True
    assert second.test_client().get("/userinfo", headers=bearer(tokens["access_token"])).status_code == 200
    assert _cc_token(second, machine).status_code == 200

    with first.app_context():
        rotated = services_of(first).clients.rotate_secret(machine["client_id"])
    assert _cc_token(second, machine).status_code == 401
    assert _cc_token(second, {**machine, "client_secret": rotated}).status_code == 200

    with second.app_context():
        svc = services_of(second)
        assert svc.sessions.end_all_for_user(svc.accounts.find_by_email("alice@example.com").id, "ended_by_admin") == 1
    assert introspect(first.test_client(), rp, tokens["access_token"]).json == {"active": False}


def test_two_concurrent_rotations_of_one_refresh_token_leave_one_winner_and_revoke_the_grant(make_app):
    import threading

    app = make_app()
    rp = _app_client(app)
    _user(app)
    tokens = _signed_in_tokens(app, rp)
    start = threading.Barrier(2)
    answers = []

    def rotate():
        start.wait()
        answers.append(refresh(app.test_client(), rp, tokens["refresh_token"]))

    threads = [threading.Thread(target=rotate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answer.status_code for answer in answers) == [200, 400]
    [winner] = [answer for answer in answers if answer.status_code == 200]
    # The loser presented a used token: the whole grant is revoked, the winner's new pair included.
    assert refresh(app.test_client(), rp, winner.json["refresh_token"]).json["error"] == "invalid_grant"
    assert introspect(app.test_client(), rp, winner.json["access_token"]).json == {"active": False}
