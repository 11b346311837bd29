-- Transactional outbox (master): written in the capture transaction, claimed and deleted by the relay.
CREATE TABLE cqrs_outbox (
    id           BIGSERIAL PRIMARY KEY,             -- claim order
    message_id   UUID NOT NULL UNIQUE,              -- sent as the AMQP message_id
    cqrs_id      TEXT NOT NULL,
    signal_type  TEXT NOT NULL,
    pk           TEXT NOT NULL,                     -- canonical JSON of the primary key
    routing_key  TEXT NOT NULL,
    body         TEXT NOT NULL,                     -- JSON without expires/retries (set at publish)
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    leased_until TIMESTAMPTZ
);
CREATE INDEX cqrs_outbox_available ON cqrs_outbox (available_at, id);

-- Tombstones (replica): a delete leaves one so a late SAVE of an older revision cannot resurrect the row.
CREATE TABLE cqrs_tombstones (
    cqrs_id      TEXT NOT NULL,
    pk           TEXT NOT NULL,                     -- canonical JSON of the primary key
    revision     INTEGER NOT NULL,
    cqrs_updated TIMESTAMPTZ NOT NULL,
    deleted_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (cqrs_id, pk)
);
CREATE INDEX cqrs_tombstones_deleted_at ON cqrs_tombstones (deleted_at);
