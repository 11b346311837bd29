-- Trigger capture (`#[cqrs(capture = "trigger")]`): the per-model triggers `cqrs triggers install`
-- creates write their outbox rows keyed by (transaction, cqrs_id, pk), so a row changed by several
-- statements of one transaction keeps one message with its last state. `capture_previous` holds the
-- tracked values the row had before the transaction first changed it (NULL: created in it).
-- Rows written by capture in Rust leave both NULL and are outside the unique index.
ALTER TABLE cqrs_outbox ADD COLUMN capture_tx BIGINT, ADD COLUMN capture_previous JSONB;
CREATE UNIQUE INDEX cqrs_outbox_capture ON cqrs_outbox (capture_tx, cqrs_id, pk)
    WHERE capture_tx IS NOT NULL;

-- django-cqrs's value forms, written as the Rust encoder writes them (cqrs::value::SqlValue::to_json),
-- for the generated triggers. A float is a JSON number that reads back as a float (12.0, not 12);
-- NaN and infinities are null. Each is one expression, NULL for NULL, and not declared STRICT: so the
-- planner inlines it. Called (not inlined), a SQL function is parsed again by every statement that
-- calls it, which made a one-row INSERT's capture twice as expensive (bench machine: 20,000 one-row
-- INSERTs in one transaction 2.1 s with STRICT, 1.15 s without; without capture 0.1 s).
CREATE FUNCTION cqrs_json_float(v double precision) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN 'null'::jsonb
        WHEN scale(v::text::numeric) = 0 THEN to_jsonb(round(v::text::numeric, 1))
        ELSE to_jsonb(v::text::numeric)
    END
$$;

-- A decimal goes through a double, as Django's JSON encoder sends it; one too large for a double
-- is sent as its text.
CREATE FUNCTION cqrs_json_numeric(v numeric) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v = 'NaN'::numeric OR abs(v) > 1.7976931348623157e308 THEN to_jsonb(v::text)
        ELSE cqrs_json_float(v::float8)
    END
$$;

-- Python's str() of an aware datetime, in UTC: `2024-02-29 10:00:00.123456+00:00`, no fraction
-- when the microseconds are 0.
CREATE FUNCTION cqrs_json_timestamptz(v timestamptz) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_jsonb(
        to_char(v AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM v)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(v AT TIME ZONE 'UTC', '.US') END
        || '+00:00')
$$;

-- Python's str() of a naive datetime.
CREATE FUNCTION cqrs_json_timestamp(v timestamp) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_jsonb(
        to_char(v, 'YYYY-MM-DD HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM v)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(v, '.US') END)
$$;
