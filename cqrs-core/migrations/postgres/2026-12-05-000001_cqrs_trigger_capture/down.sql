DROP FUNCTION cqrs_json_timestamp(timestamp);
DROP FUNCTION cqrs_json_timestamptz(timestamptz);
DROP FUNCTION cqrs_json_numeric(numeric);
DROP FUNCTION cqrs_json_float(double precision);
DROP INDEX cqrs_outbox_capture;
ALTER TABLE cqrs_outbox DROP COLUMN capture_previous, DROP COLUMN capture_tx;
