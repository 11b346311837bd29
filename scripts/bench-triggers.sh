#!/usr/bin/env bash
# Server time of trigger capture, statement by statement: installs the script that
# `cargo run -p diesel-cqrs --example trigger_sql` prints (this checkout's triggers) on a scratch
# database and times, one transaction each, 20,000 one-row INSERTs / UPDATEs / DELETEs and one
# 100,000-row INSERT ... SELECT / UPDATE / DELETE. To compare with another commit, run it there too
# (BENCHMARKS.md, "Trigger capture after the capture-correctness fixes").
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
sql=$(mktemp)
trap 'rm -f "$sql"' EXIT
cargo run -q -p diesel-cqrs --example trigger_sql > "$sql"
db=cqrs_trigbench_$$
P="psql -h 127.0.0.1 -U postgres -qAt -v ON_ERROR_STOP=1"
time_it() { # label, sql
  local s e
  s=$(date +%s.%N); $P -d "$db" -c "$2" >/dev/null; e=$(date +%s.%N)
  printf '%-32s %6.2f s\n' "$1" "$(echo "$e - $s" | bc)"
}
for _ in $(seq "$rounds"); do
  $P -d postgres -c "CREATE DATABASE $db"
  for m in migrations/postgres/*/up.sql; do $P -d "$db" -f "$m" >/dev/null; done
  $P -d "$db" -c "CREATE TABLE b_items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL, price NUMERIC(12,2), ratio DOUBLE PRECISION, at TIMESTAMPTZ, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"
  $P -d "$db" -f "$sql" >/dev/null 2>&1
  time_it "20k 1-row INSERTs, 1 txn" "DO \$\$ BEGIN FOR i IN 1..20000 LOOP INSERT INTO b_items (id, name, value, price, ratio, at) VALUES (i, 'n', i, 1.5, 0.1, now()); END LOOP; END \$\$"
  $P -d "$db" -c "DELETE FROM cqrs_outbox"
  time_it "20k 1-row UPDATEs, 1 txn" "DO \$\$ BEGIN FOR i IN 1..20000 LOOP UPDATE b_items SET value = value + 1 WHERE id = i; END LOOP; END \$\$"
  $P -d "$db" -c "DELETE FROM cqrs_outbox"
  time_it "20k 1-row DELETEs, 1 txn" "DO \$\$ BEGIN FOR i IN 1..20000 LOOP DELETE FROM b_items WHERE id = i; END LOOP; END \$\$"
  $P -d "$db" -c "DELETE FROM cqrs_outbox"
  time_it "100k-row INSERT..SELECT" "INSERT INTO b_items (id, name, value, price, ratio, at) SELECT i, 'n', i, 1.5, 0.1, now() FROM generate_series(1, 100000) i"
  $P -d "$db" -c "DELETE FROM cqrs_outbox"
  time_it "100k-row UPDATE" "UPDATE b_items SET value = value + 1"
  $P -d "$db" -c "DELETE FROM cqrs_outbox"
  time_it "100k-row DELETE" "DELETE FROM b_items"
  $P -d postgres -c "DROP DATABASE $db"
done
