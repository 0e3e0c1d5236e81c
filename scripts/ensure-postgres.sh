#!/usr/bin/env bash
# Makes sure the PostgreSQL named by TEST_DATABASE_URL answers; starts the local cluster if it is
# the default local one and is down. Fails with instructions otherwise (tests never skip).
set -euo pipefail
url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if psql "$url" -Atc 'select 1' >/dev/null 2>&1; then exit 0; fi
case "$url" in
  *127.0.0.1:5432*|*localhost:5432*)
    if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql >/dev/null 2>&1; then
      echo "PostgreSQL is down; starting the local cluster"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
      for _ in $(seq 1 50); do
        psql "$url" -Atc 'select 1' >/dev/null 2>&1 && exit 0
        sleep 0.2
      done
    fi ;;
esac
cat >&2 <<MSG
PostgreSQL is not reachable at $url.
Start it (Debian: pg_ctlcluster --skip-systemctl-redirect <version> main start) or point
TEST_DATABASE_URL at a server where the user may create databases.
MSG
exit 1
