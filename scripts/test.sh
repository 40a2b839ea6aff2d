#!/usr/bin/env bash
# Installs what the tests need (Debian packages, .venv with the pinned dev requirements) and
# runs them all: fast unit tests first, then the real-server tests (MariaDB source + replica,
# sshd on loopback, the real DAGs under dag.test()). Extra arguments go to pytest.
#
# Usage: scripts/test.sh [pytest args]      e.g. scripts/test.sh -m "not server"
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

main() {
  bash "${ROOT}/scripts/install.sh" --dev
  cd "${ROOT}"
  "${ROOT}/.venv/bin/ruff" check --select F,E9 plugins dags include/scripts sandbox tests bench
  local rc=0
  # pytest.ini and tests/conftest.py bound each test and the session; this outer limit is the
  # last resort: SIGUSR1 stops the session after fixture teardown has stopped the servers,
  # then KILL. --foreground keeps pytest in the terminal's process group (Ctrl-C reaches it).
  timeout --foreground --signal=USR1 --kill-after=90 "${TEST_TIME_LIMIT:-70m}" \
    "${ROOT}/.venv/bin/python" -m pytest -p no:cacheprovider "$@" || rc=$?
  if (( rc == 124 )); then
    echo "the test run did not end within ${TEST_TIME_LIMIT:-70m}" >&2
  fi
  if (( rc == 5 )); then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
  fi
  exit "${rc}"
}

main "$@"
