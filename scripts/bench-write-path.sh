#!/usr/bin/env bash
# What a 1-row captured create costs PostgreSQL, statement sequence by statement sequence, with
# pgbench (one round trip per command, simple protocol) on a scratch database with cqrs's
# migrations and the harness's table: the plain transaction, what `atomic` sends today, and the
# shorter sequences a capture could send; each with the outbox's NOTIFY trigger ("on"), without it
# ("off"), and with a trigger that notifies only while a relay has marked itself idle in a
# one-row table ("idle"; here no relay is idle: the cost a busy relay's writers pay), at 1, 4 and
# 16 clients. BENCHMARKS.md, "The application's write path".
#   scripts/bench-write-path.sh [seconds per cell, default 8] [rounds, default 1]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
rounds=${2:-1}
pgbench=$(ls /usr/lib/postgresql/*/bin/pgbench | tail -n1)
db=cqrs_writepath_$$
P="psql -h 127.0.0.1 -U postgres -qAt -v ON_ERROR_STOP=1"
dir=$(mktemp -d)
trap '$P -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
body='{"signal_type":"SAVE","cqrs_id":"soak_item","instance_data":{"cqrs_revision":0,"cqrs_updated":"2026-12-07 03:50:00.123456+00:00","id":1,"name":"item 1","note":null,"value":1},"instance_pk":1,"previous_data":{"value":null},"correlation_id":null,"expires":null,"retries":0,"meta":null}'
json="json_build_object('id', id, 'name', name, 'value', value, 'note', note, 'cqrs_revision', cqrs_revision, 'cqrs_updated', cqrs_updated)::text"
outbox="INSERT INTO cqrs_outbox (message_id, cqrs_id, signal_type, pk, routing_key, body) VALUES (gen_random_uuid(), 'soak_item', 'SAVE', :id, 'soak_item', '$body')"
cat > "$dir/plain.sql" <<SQL
BEGIN;
INSERT INTO soak_items (name, value, note) VALUES ('item', 1, NULL) RETURNING id;
COMMIT;
SQL
cat > "$dir/atomic5.sql" <<SQL
BEGIN;
INSERT INTO soak_items (name, value, note) VALUES ('item', 1, NULL) RETURNING id \gset
UPDATE soak_items SET cqrs_revision = 0, cqrs_updated = now() WHERE id = :id RETURNING $json;
$outbox;
COMMIT;
SQL
cat > "$dir/stamped4.sql" <<SQL
BEGIN;
INSERT INTO soak_items (name, value, note, cqrs_revision, cqrs_updated) VALUES ('item', 1, NULL, 0, now()) RETURNING id, $json \gset
$outbox;
COMMIT;
SQL
cat > "$dir/cte3.sql" <<SQL
BEGIN;
WITH ins AS (INSERT INTO soak_items (name, value, note, cqrs_revision, cqrs_updated) VALUES ('item', 1, NULL, 0, now()) RETURNING *) INSERT INTO cqrs_outbox (message_id, cqrs_id, signal_type, pk, routing_key, body) SELECT gen_random_uuid(), 'soak_item', 'SAVE', CAST(id AS TEXT), 'soak_item', $json FROM ins;
COMMIT;
SQL
cat > "$dir/commit3.sql" <<SQL
BEGIN;
INSERT INTO soak_items (name, value, note, cqrs_revision, cqrs_updated) VALUES ('item', 1, NULL, 0, now()) RETURNING id, $json \gset
$outbox \; COMMIT;
SQL
$P -d postgres -c "CREATE DATABASE $db"
for m in migrations/postgres/*/up.sql; do $P -d "$db" -f "$m" >/dev/null; done
$P -d "$db" -c "CREATE TABLE soak_items (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL, note TEXT, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL DEFAULT '2000-01-01')"
$P -d "$db" -c "CREATE TABLE bench_relay_idle (idle BOOLEAN NOT NULL); INSERT INTO bench_relay_idle VALUES (false);
  CREATE FUNCTION bench_notify_when_idle() RETURNS trigger LANGUAGE plpgsql AS \$\$
  BEGIN IF (SELECT idle FROM bench_relay_idle) THEN PERFORM pg_notify('cqrs_outbox', ''); END IF; RETURN NULL; END \$\$;
  CREATE TRIGGER bench_notify_when_idle AFTER INSERT ON cqrs_outbox FOR EACH STATEMENT EXECUTE FUNCTION bench_notify_when_idle();"
printf '%-10s %-7s %7s %7s %7s   (transactions/s)\n' sequence notify 1 4 16
for _ in $(seq "$rounds"); do
  for notify in on off idle; do
    case $notify in
      on) on=cqrs_outbox_notify; off=bench_notify_when_idle ;;
      off) on=""; off="cqrs_outbox_notify, bench_notify_when_idle" ;;
      idle) on=bench_notify_when_idle; off=cqrs_outbox_notify ;;
    esac
    for t in ${off//,/}; do $P -d "$db" -c "ALTER TABLE cqrs_outbox DISABLE TRIGGER $t"; done
    [ -n "$on" ] && $P -d "$db" -c "ALTER TABLE cqrs_outbox ENABLE TRIGGER $on"
    for seq in plain atomic5 stamped4 cte3 commit3; do
      [ "$seq" = plain ] && [ "$notify" != on ] && continue
      line=$(printf '%-10s %-7s' "$seq" "$notify")
      for c in 1 4 16; do
        $P -d "$db" -c "TRUNCATE soak_items, cqrs_outbox"
        tps=$("$pgbench" -h 127.0.0.1 -U postgres -n -M simple -f "$dir/$seq.sql" -T "$secs" -c "$c" -j "$c" "$db" 2>&1 \
          | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        line="$line $(printf '%7.0f' "$tps")"
      done
      echo "$line"
    done
  done
done
