-- Version 25 (issue 10, docs/decisions/store-phase.md): the two references a stored input makes row
-- by row, request_templates.file_id → files and requests.batch_id → batches, are checked once per
-- statement instead of once per row. A foreign key runs one lookup and lock of the referenced row
-- for every inserted row (an SPI query each, ≈ 5 µs): for a 20,000-line input, 25–31 % of the
-- PostgreSQL CPU of the templates' COPY and of the requests' INSERT … SELECT, which every file and
-- batch of the API and of `fusillade run` pays before the first request is sent. Checked once per
-- statement, 20,000 templates' COPY takes 150–160 ms of PostgreSQL CPU (210–220 before) and their
-- requests' INSERT 160–180 ms (230–280 before), alternating rounds at load 12.
--
-- What the triggers below guarantee, as the foreign keys did:
--   - a template (request) is only stored with a file (batch) that exists: the statement's rows are
--     checked together at its end, and the referenced rows are updated in place (a no-op, one row
--     version per file or batch and statement) so that no transaction can delete them until this
--     one ends, and a REPEATABLE READ or SERIALIZABLE deleter that cannot see the new rows fails to
--     serialize rather than delete (the foreign key's share lock would let it through, its check
--     then reading a fresher snapshot);
--   - a file (batch) cannot be deleted while a template (request) refers to it: checked after the
--     delete, under READ COMMITTED with a snapshot taken then, so rows committed meanwhile count;
--   - a TRUNCATE of files (batches) that leaves templates (requests) behind is refused;
--   - the referencing columns and the referenced ids never change (refused).
-- test/store/reference-checks.test.ts holds each of these, concurrent deletes included.
ALTER TABLE request_templates DROP CONSTRAINT request_templates_file_id_fkey;
ALTER TABLE requests DROP CONSTRAINT requests_batch_id_fkey;

-- The functions name the tables without a schema: they run with the search path of the migration
-- (this schema first), whatever the caller's.
CREATE FUNCTION templates_have_files() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
  ref record;
BEGIN
  FOR ref IN SELECT DISTINCT file_id AS id FROM new_templates LOOP
    UPDATE files SET id = id WHERE id = ref.id;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'insert on table "request_templates" refers to file %, which does not exist', ref.id
        USING ERRCODE = 'foreign_key_violation';
    END IF;
  END LOOP;
  RETURN NULL;
END $$;
CREATE TRIGGER templates_have_files AFTER INSERT ON request_templates
  REFERENCING NEW TABLE AS new_templates FOR EACH STATEMENT EXECUTE FUNCTION templates_have_files();

CREATE FUNCTION requests_have_batches() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
  ref record;
BEGIN
  FOR ref IN SELECT DISTINCT batch_id AS id FROM new_requests LOOP
    UPDATE batches SET id = id WHERE id = ref.id;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'insert on table "requests" refers to batch %, which does not exist', ref.id
        USING ERRCODE = 'foreign_key_violation';
    END IF;
  END LOOP;
  RETURN NULL;
END $$;
CREATE TRIGGER requests_have_batches AFTER INSERT ON requests
  REFERENCING NEW TABLE AS new_requests FOR EACH STATEMENT EXECUTE FUNCTION requests_have_batches();

-- After a delete: one index probe per deleted row (the LIMIT keeps each probe a lookup of its own,
-- never a scan of the referencing table).
CREATE FUNCTION files_keep_templates() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM old_files o
               CROSS JOIN LATERAL (SELECT 1 FROM request_templates t WHERE t.file_id = o.id LIMIT 1) r) THEN
    RAISE EXCEPTION 'delete on table "files" would leave templates without their file'
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER files_keep_templates AFTER DELETE ON files
  REFERENCING OLD TABLE AS old_files FOR EACH STATEMENT EXECUTE FUNCTION files_keep_templates();

CREATE FUNCTION batches_keep_requests() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM old_batches o
               CROSS JOIN LATERAL (SELECT 1 FROM requests r WHERE r.batch_id = o.id LIMIT 1) r) THEN
    RAISE EXCEPTION 'delete on table "batches" would leave requests without their batch'
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER batches_keep_requests AFTER DELETE ON batches
  REFERENCING OLD TABLE AS old_batches FOR EACH STATEMENT EXECUTE FUNCTION batches_keep_requests();

-- After a TRUNCATE of the referenced table (with the others truncated in the same statement): what
-- refers to it must be gone too.
CREATE FUNCTION truncate_keeps_references() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  IF (TG_TABLE_NAME = 'files' AND EXISTS (SELECT 1 FROM request_templates))
     OR (TG_TABLE_NAME = 'batches' AND EXISTS (SELECT 1 FROM requests)) THEN
    RAISE EXCEPTION 'truncate of table "%" would leave rows that refer to it', TG_TABLE_NAME
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER files_truncate_keeps_templates AFTER TRUNCATE ON files
  FOR EACH STATEMENT EXECUTE FUNCTION truncate_keeps_references();
CREATE TRIGGER batches_truncate_keeps_requests AFTER TRUNCATE ON batches
  FOR EACH STATEMENT EXECUTE FUNCTION truncate_keeps_references();

-- The columns of the references never change. An UPDATE that does not set them pays nothing (the
-- triggers are per column); the no-op updates above set an id to itself, which the WHEN lets by.
CREATE FUNCTION forbid_reference_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '%.% cannot change', TG_TABLE_NAME, TG_ARGV[0] USING ERRCODE = 'foreign_key_violation';
END $$;
CREATE TRIGGER templates_file_fixed BEFORE UPDATE OF file_id ON request_templates FOR EACH ROW
  WHEN (OLD.file_id IS DISTINCT FROM NEW.file_id) EXECUTE FUNCTION forbid_reference_change('file_id');
CREATE TRIGGER requests_batch_fixed BEFORE UPDATE OF batch_id ON requests FOR EACH ROW
  WHEN (OLD.batch_id IS DISTINCT FROM NEW.batch_id) EXECUTE FUNCTION forbid_reference_change('batch_id');
CREATE TRIGGER files_id_fixed BEFORE UPDATE OF id ON files FOR EACH ROW
  WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION forbid_reference_change('id');
CREATE TRIGGER batches_id_fixed BEFORE UPDATE OF id ON batches FOR EACH ROW
  WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION forbid_reference_change('id');
