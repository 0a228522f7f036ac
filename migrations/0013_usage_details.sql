-- Version 13: usage as OpenAI's batch object reports it (src/domain/usage.ts), per model.
-- Each completed request keeps the cached part of its input and the reasoning part of its output
-- beside the counts it had; the statement that ends a batch (src/store/sql/finalize-batch.ts) sums
-- them onto the batch row and, per model, onto the batch's batch_models rows, so a finished batch's
-- usage and cost are read from a handful of rows, never from its requests.
ALTER TABLE requests ADD COLUMN cached_tokens integer, ADD COLUMN reasoning_tokens integer;
ALTER TABLE batches ADD COLUMN cached_tokens bigint, ADD COLUMN reasoning_tokens bigint;
ALTER TABLE batch_models
  ADD COLUMN input_tokens     bigint,
  ADD COLUMN cached_tokens    bigint,
  ADD COLUMN output_tokens    bigint,
  ADD COLUMN reasoning_tokens bigint,
  ADD COLUMN total_tokens     bigint;

-- Batches that ended before this version: their details read 0 (they were not kept), their
-- per-model sums come from their requests once, here.
UPDATE batches SET cached_tokens = 0, reasoning_tokens = 0 WHERE finished_at IS NOT NULL;
UPDATE batch_models m SET
  input_tokens = u.input_tokens, cached_tokens = 0, output_tokens = u.output_tokens,
  reasoning_tokens = 0, total_tokens = u.total_tokens
  FROM (SELECT r.batch_id, r.model,
               coalesce(sum(r.input_tokens), 0)  AS input_tokens,
               coalesce(sum(r.output_tokens), 0) AS output_tokens,
               coalesce(sum(r.total_tokens), 0)  AS total_tokens
          FROM requests r JOIN batches b ON b.id = r.batch_id AND b.finished_at IS NOT NULL
         WHERE r.state = 'completed'
         GROUP BY r.batch_id, r.model) u
 WHERE m.batch_id = u.batch_id AND m.model = u.model;
UPDATE batch_models m SET input_tokens = 0, cached_tokens = 0, output_tokens = 0, reasoning_tokens = 0,
       total_tokens = 0
  FROM batches b WHERE b.id = m.batch_id AND b.finished_at IS NOT NULL AND m.input_tokens IS NULL;
