DROP FUNCTION IF EXISTS cqrs_capture_check(text, bigint, bigint);
