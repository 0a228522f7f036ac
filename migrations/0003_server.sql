-- Batch API server, version 3: the JSONL line builder used by output and error file downloads.

-- A response body as a JSON value for one JSONL line: the body's own text when it is JSON (raw
-- newlines in valid JSON can only be whitespace, so they become spaces and the line stays one
-- line), else the body as a JSON string. PostgreSQL 15 has no pg_input_is_valid(), hence the
-- exception block; the json type only checks syntax, it does not rebuild the value.
CREATE FUNCTION jsonl_value(body text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  IF body IS NULL THEN
    RETURN 'null';
  END IF;
  PERFORM body::json;
  RETURN translate(body, E'\n\r', '  ');
EXCEPTION WHEN others THEN
  RETURN to_json(body)::text;
END $$;
