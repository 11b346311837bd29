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
    psql -q "$SERVER" -c "DROP DATABASE IF EXISTS $M_DB WITH (FORCE)" \
        -c "DROP DATABASE IF EXISTS $R_DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release --locked --quiet -p example-master -p example-replica
MASTER=target/release/example-master
REPLICA=target/release/example-replica

psql -q "$SERVER" -c "CREATE DATABASE $M_DB" -c "CREATE DATABASE $R_DB" >/dev/null
psql -q -v ON_ERROR_STOP=1 "$M_URL" >/dev/null <<SQL
CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL,
  updated TIMESTAMPTZ NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL);
INSERT INTO items SELECT i, 'name ' || i, i * 7, TIMESTAMPTZ '2026-11-23 12:00:00+00' + i * INTERVAL '1 millisecond',
  i % 5, TIMESTAMPTZ '2026-11-23 12:00:00.000001+00' + i * INTERVAL '1 second' FROM generate_series(1, $ROWS) AS i;
SQL
psql -q -v ON_ERROR_STOP=1 "$R_URL" >/dev/null <<SQL
CREATE TABLE replica_items (id BIGINT PRIMARY KEY, title TEXT NOT NULL, value BIGINT NOT NULL,
  updated TIMESTAMPTZ NOT NULL, cqrs_revision INTEGER NOT NULL, cqrs_updated TIMESTAMPTZ NOT NULL);
SQL
"$MASTER" migrate --database-url "$M_URL" >/dev/null 2>&1
"$REPLICA" migrate --database-url "$R_URL" >/dev/null 2>&1

# median_of CMD...: run RUNS times (after one warm-up), print the median wall seconds; a failing
# run stops the script (set -e does not reach into $(...)).
median_of() {
    local times=()
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
    for _ in $(seq "$RUNS"); do
        /usr/bin/time -f %e -o "$WORK/t" "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
        times+=("$(cat "$WORK/t")")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

rate() { awk -v n="$ROWS" -v s="$1" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }'; }

dump=$(median_of "$MASTER" bulk-dump -c item -o "$WORK/items.dump" --force --database-url "$M_URL")
copy_out=$(median_of psql -q -v ON_ERROR_STOP=1 "$M_URL" -c "\\copy items TO '$WORK/items.csv' CSV")
# Loads start from an empty table: the TRUNCATE is inside the timed process, measured alone below.
load=$(median_of bash -c 'psql -q "$1" -c "TRUNCATE replica_items" >/dev/null && exec "$2" bulk-load -i "$3" --database-url "$1"' \
    sh "$R_URL" "$REPLICA" "$WORK/items.dump")
truncate=$(median_of psql -q "$R_URL" -c 'TRUNCATE replica_items')
copy_in=$(median_of bash -c 'psql -q "$1" -c "TRUNCATE replica_items" >/dev/null && exec psql -q -v ON_ERROR_STOP=1 "$1" -c "\\copy replica_items FROM $2 CSV"' \
    sh "$R_URL" "$WORK/items.csv")
"$REPLICA" bulk-load -i "$WORK/items.dump" --database-url "$R_URL" >/dev/null 2>&1
reload=$(median_of "$REPLICA" bulk-load -i "$WORK/items.dump" --database-url "$R_URL")
diff=$(median_of bash -c 'set -o pipefail; "$1" diff-master -c item --database-url "$2" | "$3" diff-replica --queue bench --database-url "$4" | "$1" diff-sync --no-wait --database-url "$2"' \
    sh "$MASTER" "$M_URL" "$REPLICA" "$R_URL")

echo
echo "$ROWS rows of items, median of $RUNS runs (whole processes, wall seconds; both load rows include a TRUNCATE, ${truncate} s alone)"
printf '%-44s %9s %12s\n' step seconds rows/s
printf '%-44s %9s %12s\n' "bulk-dump" "$dump" "$(rate "$dump")"
printf '%-44s %9s %12s\n' "  baseline: psql \\copy TO csv" "$copy_out" "$(rate "$copy_out")"
printf '%-44s %9s %12s\n' "bulk-load into an empty table" "$load" "$(rate "$load")"
printf '%-44s %9s %12s\n' "  baseline: psql \\copy FROM csv" "$copy_in" "$(rate "$copy_in")"
printf '%-44s %9s %12s\n' "bulk-load again (every row unchanged)" "$reload" "$(rate "$reload")"
printf '%-44s %9s %12s\n' "diff-master | diff-replica | diff-sync" "$diff" "$(rate "$diff")"
