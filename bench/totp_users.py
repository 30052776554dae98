"""Create benchmark users with an authenticator app (TOTP) enrolled, for bench/run.py.

    (with the IDP_… environment of the bench deployment) .venv/bin/python bench/totp_users.py COUNT PASSWORD [PREFIX]

Runs inside the app context and goes through idp's own services, as a person's set-up would: the
account is created (all with one password, hashed once with the configured argon2 parameters, so
creating hundreds takes seconds, not one argon2 hash each), then TOTP is enrolled with
begin_totp_enrolment → confirm_totp_enrolment and a code computed here. Prints one JSON object:
{"users": [{"email", "totp_secret", "last_step"}]}, where last_step is the time step the enrolment
code used up (a sign-in needs a code of a later step; it is the step before the current one).
"""

from __future__ import annotations

import json
import sys
import time

import pyotp


def main() -> int:
    count, password = int(sys.argv[1]), sys.argv[2]
    prefix = sys.argv[3] if len(sys.argv) > 3 else "bench-totp"

    from idp import create_app
    from idp.crypto.otp import TOTP_DIGITS, TOTP_PERIOD
    from idp.services import services

    app = create_app()
    out = []
    with app.app_context():
        svc = services()
        password_hash = svc.passwords.hash(password)
        for n in range(count):
            email = f"{prefix}-{n:05d}@example.com"
            user = svc.accounts.create_user(email, None, f"Bench TOTP {n}", password_hash=password_hash)
            enrolment_id, secret, _uri = svc.factors.begin_totp_enrolment(user)
            # The code of the previous step (within idp's ±1 step drift window, as from a phone whose clock
            # is a little behind): enrolment uses up that step, so the users can sign in right away
            # instead of waiting up to 30 s for the next step.
            now = time.time() - TOTP_PERIOD
            code = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD).at(now)
            if not svc.factors.confirm_totp_enrolment(user, enrolment_id, code, "bench"):
                print(json.dumps({"error": f"TOTP enrolment of {email} refused its code"}), file=sys.stderr)
                return 1
            out.append({"email": email, "totp_secret": secret, "last_step": int(now // TOTP_PERIOD)})
    print(json.dumps({"users": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
