#!/usr/bin/env bash
# Writes the console's screenshots to docs/images/ (console-1-sign-in.png ...): runs the browser
# tests, in which Chromium signs in as an operator, takes a baresip caller's call and wraps it up,
# and signs in as a supervisor, joins a call and takes it over, saving each state.
# Usage (from a clone where scripts/test.sh has run once):  scripts/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/images
SWITCHBOARD_SCREENSHOTS="$PWD/docs/images" .venv/bin/python -m pytest -q tests/console/test_console_browser.py
ls docs/images/console-*.png
