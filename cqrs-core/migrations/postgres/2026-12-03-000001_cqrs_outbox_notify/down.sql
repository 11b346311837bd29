DROP TRIGGER IF EXISTS cqrs_outbox_notify ON cqrs_outbox;
DROP FUNCTION IF EXISTS cqrs_outbox_notify();
