#!/usr/bin/env bash
# Installs what the tests need (Debian packages and a venv with the project), runs ruff and mypy,
# then the whole suite.
# Usage (root, Debian 12, from a clone):  scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null; then
  need=()
  # debootstrap, systemd-container and openssh-client: tests/deploy boots a fresh Debian box and
  # deploys ansible/site.yml to it over SSH. gdb and binutils: tests/sip/test_media_teardown.py holds a
  # worker's thread inside pjmedia (tests/support/rtp_sender_hold.py). flite: voices built from human
  # recordings, for tests/speech/test_spoken_numbers.py.
  for pkg in kamailio sip-tester baresip espeak-ng flite sox systemd chromium debootstrap systemd-container openssh-client gdb binutils; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" python3-venv >/dev/null
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'

# Lint and types first: a finding fails the run before the (long) suite starts.
if ! .venv/bin/ruff check .; then
  echo "test.sh: ruff found problems (see above)" >&2
  exit 1
fi
if ! .venv/bin/mypy; then
  echo "test.sh: mypy found type errors (see above)" >&2
  exit 1
fi
if ! .venv/bin/ansible-lint --profile production ansible/; then
  echo "test.sh: ansible-lint found problems in ansible/ (see above)" >&2
  exit 1
fi

# pytest exits 5 when it collected nothing: that is a failure here, not a pass. The slowest
# tests are listed at the end: the suite must stay under 45 minutes.
set +e
.venv/bin/python -m pytest -q --durations=25 "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$code"
