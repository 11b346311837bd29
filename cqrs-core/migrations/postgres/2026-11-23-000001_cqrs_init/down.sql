DROP TABLE cqrs_tombstones;
DROP TABLE cqrs_outbox;
