"""/account/security: email and SMS codes are turned on only for a verified address or number,
turning one on as the first factor ends the other sessions, turning it off forgets trusted devices."""

from __future__ import annotations

from tests.integration.mfa_support import (
    create_user,
    error_text,
    is_signed_in,
    new_browser,
    notice_text,
    password_step,
    services_of,
)
from tests.support import csrf_from


def _toggle(client, channel: str, enabled: str):
    page = client.get("/account/security").get_data(as_text=True)
    return client.post(f"/account/security/{channel}-codes", data={"csrf_token": csrf_from(page), "enabled": enabled})


def _flags(app, user_id: str) -> tuple[bool, bool]:
    from idp.extensions import db
    from idp.storage.models import User

    with app.app_context():
        user = db.session.get(User, user_id)
        return user.email_otp_enabled, user.sms_otp_enabled


def test_sms_codes_need_a_verified_number_and_email_codes_end_other_sessions(app):
    user_id = create_user(app, phone="+14155550100", phone_verified=False)
    other, client = new_browser(app), new_browser(app)
    assert password_step(other).status_code == 303
    assert password_step(client).status_code == 303

    refused = _toggle(client, "sms", "1")
    assert error_text(client.get(refused.headers["Location"])) == "Add and verify a phone number first."
    assert _flags(app, user_id) == (False, False)

    on = _toggle(client, "email", "1")
    assert notice_text(client.get(on.headers["Location"])) == "Email codes are on."
    assert _flags(app, user_id) == (True, False)
    assert not is_signed_in(other), "the first second factor ends every other session"
    assert is_signed_in(client)


def test_turning_codes_off_forgets_trusted_devices(app):
    user_id = create_user(app, email_otp_enabled=True, sms_otp_enabled=True)
    client = new_browser(app)
    with app.app_context():
        services_of(app).devices.trust(user_id, "Laptop", "test", "127.0.0.1")
    # A sign-in that used a second step, as re-authentication for this change requires.
    with app.app_context():
        from idp.extensions import db
        from idp.storage.models import User

        db.session.get(User, user_id).email_otp_enabled = False
        db.session.commit()
    assert password_step(client).status_code == 303
    off = _toggle(client, "sms", "0")
    assert notice_text(client.get(off.headers["Location"])) == "SMS codes are off."
    assert _flags(app, user_id) == (False, False)
    with app.app_context():
        assert services_of(app).devices.list(user_id) == []
