-- Retry history, version 7. A retry of failed requests (src/store/sql/retry-failed.ts) copies each
-- failed outcome here before it puts the request back to pending, so the failure stays visible:
-- the throughput chart keeps its red, a request shows its earlier outcomes, and the batch counts
-- how many requests it has retried. Only the retry statement writes here: the daemon's writes
-- (claim, send, complete) never touch this table, so the hot path is unchanged.
CREATE TABLE request_failures (
  id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  batch_id            uuid NOT NULL REFERENCES batches (id),
  request_id          uuid NOT NULL,
  line_number         integer NOT NULL,
  attempt             integer NOT NULL,
  started_at          timestamptz,
  failed_at           timestamptz NOT NULL,
  response_status     integer,
  response_body       text,
  upstream_request_id text,
  error_code          text,
  error_message       text,
  retried_at          timestamptz NOT NULL DEFAULT now(),
  CHECK (response_status IS NOT NULL OR error_code IS NOT NULL)
);
-- The throughput chart: a batch's past failures in time order.
CREATE INDEX request_failures_batch_idx ON request_failures (batch_id, failed_at);
-- One request's earlier outcomes (the request viewer).
CREATE INDEX request_failures_request_idx ON request_failures (request_id);

-- Requests put back to pending by retries over the batch's life (one request retried twice counts
-- twice). Written in the retry's own statement, not by a trigger.
ALTER TABLE batches ADD COLUMN retried_count integer NOT NULL DEFAULT 0 CHECK (retried_count >= 0);
