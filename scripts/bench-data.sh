#!/usr/bin/env bash
# The data commands on N rows of the example services (release build, PostgreSQL), each timed as a
# whole process RUNS times, side by side with psql's \copy of the same table in the same run.
# Prints the median wall time of each step and rows/s. Needs psql and /usr/bin/time.
#
#   scripts/bench-data.sh                 # 100,000 rows, 5 runs
#   ROWS=1000000 RUNS=3 scripts/bench-data.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-100000}
RUNS=${RUNS:-5}
SERVER=${CQRS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
BASE=${SERVER%/*}
M_DB=cqrs_bench_master_$$
R_DB=cqrs_bench_replica_$$
M_URL=$BASE/$M_DB
R_URL=$BASE/$R_DB
WORK=$(mktemp -d)

cleanup() {
    psql -q "$SERVER" -c "DROP DATABASE IF EXISTS $M_DB" -c "DROP DATABASE IF EXISTS $R_DB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --locked --quiet -p example-master -p example-replica
MASTER=target/release/example-master
REPLICA=target/release/example-replica

psql -q "$SERVER" -c "CREATE DATABASE $M_DB" -c "CREATE DATABASE $R_DB" >/dev/null
psql -q "$M_URL" >/dev/null <<SQL
CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL,
  updated TIMESTAMPTZ NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL);
INSERT INTO items SELECT i, 'name ' || i, i * 7, TIMESTAMPTZ '2026-11-23 12:00:00+00' + i * INTERVAL '1 millisecond',
  i % 5, TIMESTAMPTZ '2026-11-23 12:00:00.000001+00' + i * INTERVAL '1 second' FROM generate_series(1, $ROWS) AS i;
SQL
psql -q "$R_URL" >/dev/null <<SQL
CREATE TABLE replica_items (id BIGINT PRIMARY KEY, title TEXT NOT NULL, value BIGINT NOT NULL,
  updated TIMESTAMPTZ NOT NULL, cqrs_revision INTEGER NOT NULL, cqrs_updated TIMESTAMPTZ NOT NULL);
SQL
"$MASTER" migrate --database-url "$M_URL" >/dev/null 2>&1
"$REPLICA" migrate --database-url "$R_URL" >/dev/null 2>&1

# median_of CMD...: run RUNS times (after one warm-up), print the median wall seconds.
median_of() {
    local times=()
    "$@" >/dev/null 2>&1
    for _ in $(seq "$RUNS"); do
        /usr/bin/time -f %e -o "$WORK/t" "$@" >/dev/null 2>&1
        times+=("$(cat "$WORK/t")")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

rate() { awk -v n="$ROWS" -v s="$1" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }'; }

"$MASTER" bulk-dump -c item -o "$WORK/items.dump" --force --database-url "$M_URL" 2>/dev/null

dump=$(median_of "$MASTER" bulk-dump -c item -o "$WORK/items.dump" --force --database-url "$M_URL")
copy_out=$(median_of psql -q "$M_URL" -c "\\copy items TO '$WORK/items.csv' CSV")
load=$(median_of sh -c "psql -q '$R_URL' -c 'TRUNCATE replica_items' >/dev/null && exec '$REPLICA' bulk-load -i '$WORK/items.dump' --database-url '$R_URL'")
truncate=$(median_of psql -q "$R_URL" -c 'TRUNCATE replica_items')
copy_in=$(median_of sh -c "psql -q '$R_URL' -c 'TRUNCATE replica_items' >/dev/null && exec psql -q '$R_URL' -c \"\\\\copy replica_items FROM '$WORK/items.csv' CSV\"")
"$REPLICA" bulk-load -i "$WORK/items.dump" --database-url "$R_URL" >/dev/null 2>&1
reload=$(median_of "$REPLICA" bulk-load -i "$WORK/items.dump" --database-url "$R_URL")
diff=$(median_of sh -c "'$MASTER' diff-master -c item --database-url '$M_URL' | '$REPLICA' diff-replica --queue bench --database-url '$R_URL' | exec '$MASTER' diff-sync --no-wait --database-url '$M_URL'")

echo
echo "$ROWS rows of items, median of $RUNS runs (whole processes, wall seconds; load rows include a ${truncate} s TRUNCATE)"
printf '%-44s %9s %12s\n' step seconds rows/s
printf '%-44s %9s %12s\n' "bulk-dump" "$dump" "$(rate "$dump")"
printf '%-44s %9s %12s\n' "  baseline: psql \\copy TO csv" "$copy_out" "$(rate "$copy_out")"
printf '%-44s %9s %12s\n' "bulk-load into an empty table" "$load" "$(rate "$load")"
printf '%-44s %9s %12s\n' "  baseline: psql \\copy FROM csv" "$copy_in" "$(rate "$copy_in")"
printf '%-44s %9s %12s\n' "bulk-load again (every row unchanged)" "$reload" "$(rate "$reload")"
printf '%-44s %9s %12s\n' "diff-master | diff-replica | diff-sync" "$diff" "$(rate "$diff")"
