-- Version 22 (issue 14, "Leaner rows"): bodies of finished work stored compressed by the
-- application (src/domain/body-codec.ts: a version byte, the decoded length, raw deflate with a
-- shared dictionary). PostgreSQL never compresses these rows itself: they stay under its ~2 KB
-- TOAST threshold (docs/decisions/retention.md). A background pass run by the daemons
-- (src/db/compress.ts) moves the answer of each completed request of an ended batch into
-- response_body_z, leaving response_body = '' (the completed-row CHECK wants it non-NULL; '' is one
-- byte). Every read takes response_body_z when it is set, so old and new rows both read.
ALTER TABLE requests ADD COLUMN response_body_z bytea;
-- Already compressed: PostgreSQL must not try pglz on it again when a row crosses its threshold.
ALTER TABLE requests ALTER COLUMN response_body_z SET STORAGE EXTERNAL;

-- The batch's finished_at its rows were compressed at (as files.measured_for, migration 0018): the
-- pass comes back to a batch that a retry reopened and that ended again. NULL: not compressed yet.
ALTER TABLE batches ADD COLUMN compressed_for timestamptz;

-- The terminal guard (migration 0001) refused every update of a completed row. It now lets through
-- exactly one: the compression move, where a completed row stays completed and its answer goes
-- from response_body to response_body_z (response_body becomes '').
DROP TRIGGER requests_terminal_guard ON requests;
CREATE TRIGGER requests_terminal_guard BEFORE UPDATE ON requests FOR EACH ROW
  WHEN ((OLD.state IN ('completed', 'canceled')
         AND NOT (OLD.state = 'completed' AND NEW.state = 'completed'
                  AND OLD.response_body_z IS NULL AND NEW.response_body_z IS NOT NULL
                  AND NEW.response_body = ''))
        OR (OLD.state = 'failed' AND NEW.state NOT IN ('failed', 'pending')))
  EXECUTE FUNCTION forbid_terminal_rewrite();

-- request_view (migration 0001) lists the columns requests had then; readers of completed rows
-- through it (the library's reads, message batch results, the dashboard) need the compressed answer.
CREATE OR REPLACE VIEW request_view AS
SELECT r.id, r.batch_id, r.template_id, r.line_number, r.model, r.state, r.attempt, r.not_before,
       r.daemon_id, r.claimed_at, r.lease_expires_at, r.started_at, r.completed_at, r.response_status,
       r.response_body, r.upstream_request_id, r.error_code, r.error_message, r.input_tokens,
       r.output_tokens, r.total_tokens, r.created_at,
       CASE
         WHEN r.state = 'pending' AND b.cancelling_at IS NOT NULL THEN 'canceled'
         WHEN r.state = 'pending' AND (b.expired_at IS NOT NULL OR b.expires_at <= now()) THEN 'canceled'
         ELSE r.state
       END AS effective_state,
       CASE
         WHEN r.state = 'pending' AND b.cancelling_at IS NOT NULL THEN 'batch_cancelled'
         WHEN r.state = 'pending' AND (b.expired_at IS NOT NULL OR b.expires_at <= now()) THEN 'batch_expired'
         ELSE r.error_code
       END AS effective_error_code,
       r.response_body_z
FROM requests r
JOIN batches b ON b.id = r.batch_id;
