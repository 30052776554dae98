#!/usr/bin/env bash
# Install what the tests need into ./.venv and run the whole suite.
# Integration tests use PostgreSQL and Redis on 127.0.0.1 (they skip locally when those are
# missing, and fail under CI=true). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
exec .venv/bin/pytest "$@"
