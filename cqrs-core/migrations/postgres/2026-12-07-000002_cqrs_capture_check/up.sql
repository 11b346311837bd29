-- Used by `atomic` when PostgreSQL writes the SAVEs of the rows a transaction created (one
-- prepared statement at commit, capture/fast.rs): fails that statement, and the transaction, when a
-- created row is no longer there under its key (deleted, or its key changed, outside capture), so
-- nothing commits that the replicas would not hear of.
CREATE FUNCTION cqrs_capture_check(model text, wanted bigint, present bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF wanted IS DISTINCT FROM present THEN
        RAISE EXCEPTION 'cqrs: % row(s) of % created in this transaction, but % exist at commit: a created row was deleted, or its primary key changed, outside capture (delete with tx.delete or tx.delete_key; primary keys cannot change)', wanted, model, present;
    END IF;
    RETURN true;
END
$$;

-- `atomic` writes bodies with these outside a trigger, in the writer's session: a float's text must
-- not depend on that session's `extra_float_digits` (0 would cut 0.30000000000000004 to 0.3).
ALTER FUNCTION cqrs_json_float(double precision) SET extra_float_digits = 1;
