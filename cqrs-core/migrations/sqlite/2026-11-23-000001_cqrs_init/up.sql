-- Transactional outbox (master): written in the capture transaction, claimed and deleted by the relay.
-- Timestamps are TEXT in Diesel's TimestamptzSqlite form (UTC).
CREATE TABLE cqrs_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT, -- claim order, never reused
    message_id   TEXT NOT NULL UNIQUE,              -- UUID, sent as the AMQP message_id
    cqrs_id      TEXT NOT NULL,
    signal_type  TEXT NOT NULL,
    pk           TEXT NOT NULL,                     -- canonical JSON of the primary key
    routing_key  TEXT NOT NULL,
    body         TEXT NOT NULL,                     -- JSON without expires/retries (set at publish)
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    leased_until TEXT
);
CREATE INDEX cqrs_outbox_available ON cqrs_outbox (available_at, id);

-- Tombstones (replica): a delete leaves one so a late SAVE of an older revision cannot resurrect the row.
CREATE TABLE cqrs_tombstones (
    cqrs_id      TEXT NOT NULL,
    pk           TEXT NOT NULL,                     -- canonical JSON of the primary key
    revision     INTEGER NOT NULL,
    cqrs_updated TEXT NOT NULL,
    deleted_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    PRIMARY KEY (cqrs_id, pk)
) WITHOUT ROWID;
CREATE INDEX cqrs_tombstones_deleted_at ON cqrs_tombstones (deleted_at);
