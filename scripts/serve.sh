#!/usr/bin/env bash
# Install idp into ./.venv (once) and run it on the embedded default:
# SQLite + in-process store + mail written to instance/mail. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/idp serve "$@"
