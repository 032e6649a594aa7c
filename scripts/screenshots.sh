#!/usr/bin/env bash
# Writes the console's screenshots to docs/images/ (console-1-sign-in.png ...): runs the browser
# test, in which Chromium signs in, takes a baresip caller's call and wraps it up, saving each state.
# Usage (from a clone where scripts/test.sh has run once):  scripts/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/images
SWITCHBOARD_SCREENSHOTS="$PWD/docs/images" .venv/bin/python -m pytest -q \
  tests/console/test_console_browser.py::test_an_operator_in_chromium_takes_a_call_and_both_hear_each_other
ls docs/images/console-*.png
