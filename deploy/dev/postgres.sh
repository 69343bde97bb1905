#!/usr/bin/env bash
# Start a local PostgreSQL for development and CI (Debian's packages), with a `hookstream`
# role that may create databases (tests create one per test). Idempotent.
set -euo pipefail
HOST=${PGHOST_ADDR:-127.0.0.1}
PORT=${PGPORT:-5432}

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "postgres: installing Debian's postgresql package"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if ! pg_isready -q -h "$HOST" -p "$PORT"; then
  read -r version cluster _ < <(pg_lsclusters --no-header | head -n 1)
  if [ -z "${version:-}" ]; then
    version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
    cluster=main
    pg_createcluster "$version" "$cluster" -p "$PORT" >/dev/null
  fi
  pg_ctlcluster "$version" "$cluster" start
  for _ in $(seq 1 60); do pg_isready -q -h "$HOST" -p "$PORT" && break; sleep 0.5; done
  pg_isready -q -h "$HOST" -p "$PORT" || { echo "postgres: did not start"; exit 1; }
fi

as_postgres() { runuser -u postgres -- psql -p "$PORT" -v ON_ERROR_STOP=1 -qtAc "$1"; }
if [ "$(as_postgres "select 1 from pg_roles where rolname = 'hookstream'")" != "1" ]; then
  as_postgres "create role hookstream login createdb password 'hookstream'"
fi
if [ "$(as_postgres "select 1 from pg_database where datname = 'hookstream'")" != "1" ]; then
  as_postgres "create database hookstream owner hookstream"
fi
echo "postgres: ready at postgresql://hookstream:hookstream@$HOST:$PORT/hookstream"
