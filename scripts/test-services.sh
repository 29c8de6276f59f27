#!/usr/bin/env bash
# Idempotent set-up of the services the test suite needs, run before `pytest` (README, .ci/run):
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres): the tuning tests start a throw-away cluster
#     on a free loopback port (tests/agents/conftest.py) and point two Optuna workers at it;
#   - when running as root (CI does), an unprivileged OS user for that cluster, because postgres refuses
#     to run as root ("postgres" by default, or $SPOTGYM_PG_OS_USER);
#   - Chromium from the OS packages (Debian's `chromium`): the dashboard's browser tests drive it headless through
#     Playwright (tests/dashboard), which must never download a browser of its own. $SPOTGYM_CHROMIUM names another
#     binary to use instead.
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

find_chromium() {
  local c
  for c in "${SPOTGYM_CHROMIUM:-}" /usr/bin/chromium "$(command -v chromium 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

if ! chromium=$(find_chromium); then
  echo "test-services: Chromium not found; installing the chromium package (and chromium-driver if available)" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
  as_root apt-get install -y -qq --no-install-recommends chromium-driver >/dev/null 2>&1 || true  # optional
  chromium=$(find_chromium) || { echo "test-services: chromium installed but no binary at /usr/bin/chromium" >&2; exit 1; }
fi

echo "test-services: $("$bin/pg_ctl" --version) in $bin"
echo "test-services: $("$chromium" --version 2>/dev/null | tail -n 1) at $chromium"
