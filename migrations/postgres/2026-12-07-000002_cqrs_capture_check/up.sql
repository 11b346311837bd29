-- Used by `atomic` when it writes the SAVEs of the rows a transaction created in the same message
-- as its COMMIT (the bodies built by PostgreSQL): fails that statement, and with it the COMMIT
-- sent behind it, when a created row is no longer there under its key (deleted, or its key changed,
-- outside capture), so nothing commits that the replicas would not hear of.
CREATE FUNCTION cqrs_capture_check(model text, wanted bigint, present bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF wanted IS DISTINCT FROM present THEN
        RAISE EXCEPTION 'cqrs: % row(s) of % created in this transaction, but % exist at commit: a created row was deleted, or its primary key changed, outside capture (delete with tx.delete or tx.delete_key; primary keys cannot change)', wanted, model, present;
    END IF;
    RETURN true;
END
$$;
