#!/usr/bin/env bash
# Idempotent set-up of the services the test suite needs, run before `pytest` (README, .ci/run):
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres): the tuning tests start a throw-away cluster
#     on a free loopback port (tests/agents/conftest.py) and point two Optuna workers at it;
#   - when running as root (CI does), an unprivileged OS user for that cluster, because postgres refuses
#     to run as root ("postgres" by default, or $SPOTGYM_PG_OS_USER).
# Nothing is started here and nothing is left running; a second run changes nothing.
set -euo pipefail

find_pg_bin() {
  local d
  if [ -n "${SPOTGYM_PG_BIN:-}" ] && [ -x "$SPOTGYM_PG_BIN/pg_ctl" ]; then echo "$SPOTGYM_PG_BIN"; return 0; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
  done
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"; return 0
  fi
  return 1
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else
    echo "test-services: need root (or passwordless sudo) to run: $*" >&2; return 1; fi
}

if ! bin=$(find_pg_bin); then
  echo "test-services: PostgreSQL server binaries not found; installing the postgresql package" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  bin=$(find_pg_bin) || { echo "test-services: postgresql installed but pg_ctl/initdb not found" >&2; exit 1; }
fi

pg_user="${SPOTGYM_PG_OS_USER:-postgres}"
if [ "$(id -u)" = 0 ] && ! id "$pg_user" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user"
fi

echo "test-services: $("$bin/pg_ctl" --version) in $bin"
