-- Retention, version 12 (src/store/purge.ts, docs/decisions/retention.md): expired and deleted data
-- is removed in the background, in small transactions.

-- A batch's output_expires_after (OpenAI's shape, anchor created_at of the output and error files):
-- the seconds its output and error files live once the batch has ended. NULL: they live as long as
-- the batch.
ALTER TABLE batches ADD COLUMN output_expires_after integer
  CHECK (output_expires_after BETWEEN 3600 AND 2592000);

-- The purge deletes a file's templates only once no batch made from the file remains (and batch
-- creation refuses a deleted or expired file), so requests need no foreign key to templates: the
-- key made every template deletion scan requests (5 s for 2 templates at 1.6M rows), and an index
-- on requests(template_id) to make it cheap would cost ~40 bytes per request.
ALTER TABLE requests DROP CONSTRAINT IF EXISTS requests_template_id_fkey;

-- The purge's candidates: a handful of rows each, found without scanning the tables.
CREATE INDEX batches_finished_idx ON batches (finished_at) WHERE deleted_at IS NULL AND finished_at IS NOT NULL;
CREATE INDEX batches_deleted_idx ON batches (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX files_expires_idx ON files (expires_at) WHERE deleted_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX files_deleted_idx ON files (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX files_input_created_idx ON files (created_at) WHERE deleted_at IS NULL AND purpose = 'batch';
