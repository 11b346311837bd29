ALTER FUNCTION cqrs_json_float(double precision) RESET extra_float_digits;
DROP FUNCTION IF EXISTS cqrs_capture_check(text, bigint, bigint);
