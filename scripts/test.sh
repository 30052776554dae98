#!/usr/bin/env bash
# Install what the tests need into ./.venv and run the whole suite.
# Integration tests use PostgreSQL and Redis on 127.0.0.1 (they skip locally when those are
# missing, and fail under CI=true); browser tests use /usr/bin/chromium, installed here when
# running as root. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
# Browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/pytest "$@"
