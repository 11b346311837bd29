#!/usr/bin/env bash
# The project's test command (the second command at the top of README.md): make sure PostgreSQL and RabbitMQ are up,
# then run the whole workspace's tests. Tests that restart a service will run after the normal
# suite, alone, from their own test binary.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL="${CQRS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

wait_for() { # name, seconds, command...
  local name=$1 secs=$2; shift 2
  for _ in $(seq "$secs"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "test.sh: $name is not answering after ${secs}s" >&2; return 1
}

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "test.sh: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
wait_for PostgreSQL 60 psql "$PG_URL" -Atc 'select 1'

if ! rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
  echo "test.sh: starting RabbitMQ" >&2
  rabbitmq-server -detached || true
  wait_for RabbitMQ 90 rabbitmq-diagnostics -q check_port_connectivity
fi

export CQRS_TEST_DATABASE_URL="$PG_URL"
cargo test --workspace --locked "$@"

# Release readiness: the API docs build with no warning (broken intra-doc links included) and the
# three published crates package. `--no-verify`: their build is the one above; the verified dry run
# (the same command without it) passes too but rebuilds Diesel with the packaged crates' own
# features, about 5 more minutes here: run it before a release.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked -p diesel-cqrs -p diesel-cqrs-derive -p diesel-cqrs-cli
cargo publish --dry-run --workspace --no-verify --allow-dirty --locked
