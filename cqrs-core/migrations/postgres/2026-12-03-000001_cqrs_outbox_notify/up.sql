-- Wake relays in other processes at commit. A NOTIFY is delivered when the inserting transaction
-- commits, once per transaction however many rows it queued, so a relay listening on the channel
-- publishes at once instead of waiting for its next poll. A trigger, not a statement sent by capture:
-- it costs no round trip, and every writer of the outbox (capture, sync, diff-sync) wakes the relay.
CREATE FUNCTION cqrs_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cqrs_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER cqrs_outbox_notify AFTER INSERT ON cqrs_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION cqrs_outbox_notify();
