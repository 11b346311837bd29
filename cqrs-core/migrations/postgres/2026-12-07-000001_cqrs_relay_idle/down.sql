CREATE OR REPLACE FUNCTION cqrs_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cqrs_outbox', '');
    RETURN NULL;
END
$$;
DROP TABLE IF EXISTS cqrs_relay_idle;
