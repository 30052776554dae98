"""Chromium (Debian's, driven by Playwright for Python) against a real `idp serve` process.

The server runs on PostgreSQL and Redis like tests/e2e, with the issuer on `localhost`: browsers
refuse WebAuthn on a bare IP address, and the RP ID is the issuer's host. Without Chromium the
tests are skipped with a message, except under CI=true where that is a failure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from idp.settings import PROJECT_ROOT
from tests.conftest import IN_CI
from tests.e2e.conftest import LiveDeployment, deployment  # noqa: F401  (fixture used below)

CHROMIUM = os.environ.get("IDP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EMAIL = "owner@example.com"
PASSWORD = "a long and memorable passphrase"


def _missing(message: str):
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        _missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium); browser tests need it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (pip install -e '.[test]'); browser tests need it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(chromium):
    context = chromium.new_context()
    context.set_default_timeout(15_000)
    yield context
    context.close()


@dataclass
class LiveIdp:
    base: str
    deployment: LiveDeployment
    email: str = EMAIL
    password: str = PASSWORD

    def query(self, sql: str, *params):
        """Read the server's database directly (what no page shows, e.g. a session's amr)."""
        url = self.deployment.env["IDP_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture
def live_idp(deployment):  # noqa: F811  (the fixture imported above)
    deployment.issuer = f"http://localhost:{deployment.port}"
    deployment.env["IDP_ISSUER"] = deployment.issuer
    # The server runs this checkout's code even if the venv's editable install points elsewhere.
    deployment.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    deployment.cli("init")
    deployment.cli("users", "create", "--email", EMAIL, "--password", PASSWORD, "--name", "Site Owner")
    deployment.start(workers=2)
    return LiveIdp(base=deployment.issuer, deployment=deployment)
