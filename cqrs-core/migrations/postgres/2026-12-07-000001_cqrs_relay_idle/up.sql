-- Writers notify only while a relay waits for them. A NOTIFY makes PostgreSQL take one lock for
-- the whole database from just before the notifying transaction commits until its commit is on
-- disk, so notifying writers commit one at a time instead of sharing fsyncs: on the project's
-- 2-core machine a 1-row create writing its outbox row in three round trips, with 16 writers, ran
-- at 52-54% of the same transactions without the NOTIFY (scripts/bench-write-path.sh,
-- BENCHMARKS.md). A relay that is busy claims
-- again without being told, so only an idle one needs the notification. An idle relay keeps a row
-- here keyed by the backend pid of its LISTEN connection; the trigger notifies only when a row
-- exists. UNLOGGED: the rows describe live sessions, so losing them in a crash or a failover costs
-- nothing but a relay's next poll, and writing them costs no WAL.
CREATE UNLOGGED TABLE cqrs_relay_idle (
    pid INTEGER PRIMARY KEY,
    since TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION cqrs_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM cqrs_relay_idle) THEN
        PERFORM pg_notify('cqrs_outbox', '');
    END IF;
    RETURN NULL;
END
$$;
