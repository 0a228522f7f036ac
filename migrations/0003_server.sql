-- Batch API server, version 3: the JSONL line builder used by output and error file downloads.

-- A response body as a JSON value for one JSONL line: the body's own text when it is JSON (raw
-- newlines in valid JSON can only be whitespace, so they become spaces and the line stays one
-- line), else the body as a JSON string. PostgreSQL 15 has no pg_input_is_valid() nor IS JSON,
-- hence the exception block; the json type only checks syntax, it does not rebuild the value.
-- Measured on 4 KB bodies: the check costs ~20 µs a row; translate() on every body cost ~140 µs,
-- so newlines are only replaced when strpos() finds one. PARALLEL UNSAFE: no process in a parallel
-- query, not even the leader, may open the subtransaction an exception block needs.
CREATE FUNCTION jsonl_value(body text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL UNSAFE AS $$
DECLARE
  checked json;
BEGIN
  IF body IS NULL THEN
    RETURN 'null';
  END IF;
  checked := body::json;
  IF strpos(body, E'\n') > 0 OR strpos(body, E'\r') > 0 THEN
    RETURN replace(replace(body, E'\n', ' '), E'\r', ' ');
  END IF;
  RETURN body;
EXCEPTION WHEN others THEN
  RETURN to_json(body)::text;
END $$;
