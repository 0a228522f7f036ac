-- fusillade schema, version 1.
-- Runs with search_path set to the target schema (see src/store/migrate.ts), so names are unqualified.
-- The request lifecycle and its invariants are stated in src/domain/request-state.ts.

-- Owners' API keys for the Batch API server. Only a SHA-256 hash of the key is kept.
CREATE TABLE api_keys (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner         text NOT NULL,
  name          text,
  key_hash      text NOT NULL UNIQUE,
  key_prefix    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz,
  revoked_at    timestamptz
);
CREATE INDEX api_keys_owner_idx ON api_keys (owner);

-- Files: uploaded request templates (purpose 'batch') and the virtual output and error files of a
-- batch (purpose 'batch_output' / 'batch_error'), whose content is streamed from the requests table.
CREATE TABLE files (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name           text NOT NULL,
  description    text,
  purpose        text NOT NULL DEFAULT 'batch'
                 CHECK (purpose IN ('batch', 'batch_output', 'batch_error')),
  size_bytes     bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
  template_count integer NOT NULL DEFAULT 0 CHECK (template_count >= 0),
  owner          text,
  source_batch_id uuid,
  expires_at     timestamptz,
  created_at     timestamptz NOT NULL DEFAULT now(),
  deleted_at     timestamptz,
  CHECK ((purpose = 'batch') = (source_batch_id IS NULL))
);
-- Keyset pagination of an owner's live files, newest first.
CREATE INDEX files_owner_created_idx ON files (owner, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX files_source_batch_idx ON files (source_batch_id, purpose) WHERE source_batch_id IS NOT NULL;

-- One row per input line. `endpoint` is the upstream base URL, `path` the URL path sent to it.
-- `body` is kept as text, byte for byte as given (jsonb would reorder keys and drop duplicates).
-- `api_key` is the upstream key when the library caller supplies one per template; the server
-- leaves it empty and resolves keys from its configuration at dispatch time.
CREATE TABLE request_templates (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  file_id     uuid NOT NULL REFERENCES files (id),
  line_number integer NOT NULL CHECK (line_number >= 1),
  custom_id   text,
  endpoint    text NOT NULL,
  method      text NOT NULL CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
  path        text NOT NULL,
  body        text NOT NULL,
  model       text NOT NULL CHECK (model <> ''),
  api_key     text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX request_templates_file_line_idx ON request_templates (file_id, line_number);
CREATE UNIQUE INDEX request_templates_file_custom_id_idx ON request_templates (file_id, custom_id)
  WHERE custom_id IS NOT NULL;

-- Batches. While a batch is live its counts are computed from requests_batch_state_idx; when it
-- ends (finished_at set) the counts are frozen on this row (REFERENCE §4 lesson 5).
-- Cancelling is one update of this row: cancelling_at (lesson 6). Pending requests of a cancelled
-- or expired batch read as canceled without being rewritten (see request_view below).
CREATE TABLE batches (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  file_id           uuid NOT NULL REFERENCES files (id),
  owner             text,
  endpoint          text NOT NULL DEFAULT '',
  completion_window text NOT NULL DEFAULT '24h',
  metadata          jsonb,
  idempotency_key   text,
  errors            jsonb,
  total_requests    integer NOT NULL DEFAULT 0,
  created_at        timestamptz NOT NULL DEFAULT now(),
  in_progress_at    timestamptz,
  expires_at        timestamptz NOT NULL,
  finalizing_at     timestamptz,
  completed_at      timestamptz,
  failed_at         timestamptz,
  expired_at        timestamptz,
  cancelling_at     timestamptz,
  cancelled_at      timestamptz,
  finished_at       timestamptz,
  deleted_at        timestamptz,
  -- Frozen when the batch ends; NULL while it is live.
  completed_count   integer,
  failed_count      integer,
  canceled_count    integer,
  input_tokens      bigint,
  output_tokens     bigint,
  total_tokens      bigint,
  output_file_id    uuid,
  error_file_id     uuid,
  CHECK ((finished_at IS NULL) = (completed_count IS NULL)),
  CHECK ((finished_at IS NULL) = (failed_count IS NULL)),
  CHECK ((finished_at IS NULL) = (canceled_count IS NULL)),
  CHECK (cancelled_at IS NULL OR cancelling_at IS NOT NULL)
);
CREATE INDEX batches_owner_created_idx ON batches (owner, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX batches_file_idx ON batches (file_id);
-- The claim walks live batches, earliest deadline first (lesson 4): a handful of rows, not the backlog.
CREATE INDEX batches_live_idx ON batches (expires_at, created_at, id)
  WHERE finished_at IS NULL AND cancelling_at IS NULL AND deleted_at IS NULL;
CREATE UNIQUE INDEX batches_idempotency_idx ON batches (coalesce(owner, ''), idempotency_key)
  WHERE idempotency_key IS NOT NULL;

-- The models present in each batch, written once at batch creation, so the claim knows which
-- models have work without scanning requests.
CREATE TABLE batch_models (
  batch_id uuid NOT NULL REFERENCES batches (id),
  model    text NOT NULL,
  PRIMARY KEY (batch_id, model)
);
CREATE INDEX batch_models_model_idx ON batch_models (model);

-- Per-model concurrency limits that hold across every daemon sharing this database (lesson 13).
-- A claim locks the model's row, counts the model's in-flight requests and claims at most the
-- difference. Daemons seed rows from their configuration; setModelConcurrency updates them.
CREATE TABLE model_limits (
  model       text PRIMARY KEY,
  concurrency integer NOT NULL CHECK (concurrency >= 0),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Daemons announce themselves and heartbeat; requests of a daemon whose heartbeat is stale are
-- reclaimed by the others.
CREATE TABLE daemons (
  id           uuid PRIMARY KEY,
  host         text NOT NULL,
  pid          integer NOT NULL,
  version      text,
  started_at   timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  stopped_at   timestamptz,
  config       jsonb,
  stats        jsonb
);
CREATE INDEX daemons_heartbeat_idx ON daemons (heartbeat_at) WHERE stopped_at IS NULL;

-- Requests: one per template per batch. The state machine, with the fields each state carries:
--   pending     waiting (not_before: earliest retry time, or NULL)
--   claimed     taken by daemon_id at claimed_at, lease until lease_expires_at, not yet sent
--   processing  durably marked before the HTTP request leaves; started_at set
--   completed   upstream answered 2xx: response_status, response_body, completed_at
--   failed      final error: response_status/body if HTTP, else error_code/error_message
--   canceled    batch cancelled or expired before the request finished: error_code says which
CREATE TABLE requests (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  batch_id            uuid NOT NULL REFERENCES batches (id),
  template_id         uuid NOT NULL REFERENCES request_templates (id),
  line_number         integer NOT NULL,
  model               text NOT NULL,
  state               text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'claimed', 'processing', 'completed', 'failed', 'canceled')),
  attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  not_before          timestamptz,
  daemon_id           uuid,
  claimed_at          timestamptz,
  lease_expires_at    timestamptz,
  started_at          timestamptz,
  completed_at        timestamptz,
  response_status     integer,
  response_body       text,
  upstream_request_id text,
  error_code          text,
  error_message       text,
  input_tokens        integer,
  output_tokens       integer,
  total_tokens        integer,
  created_at          timestamptz NOT NULL DEFAULT now(),
  CHECK (state <> 'pending' OR (daemon_id IS NULL AND claimed_at IS NULL AND lease_expires_at IS NULL
                                AND completed_at IS NULL)),
  CHECK (state NOT IN ('claimed', 'processing')
         OR (daemon_id IS NOT NULL AND claimed_at IS NOT NULL AND lease_expires_at IS NOT NULL
             AND completed_at IS NULL)),
  CHECK (state <> 'processing' OR started_at IS NOT NULL),
  CHECK (state <> 'completed' OR (completed_at IS NOT NULL AND response_status IS NOT NULL
                                  AND response_body IS NOT NULL)),
  CHECK (state <> 'failed' OR (completed_at IS NOT NULL AND (response_status IS NOT NULL OR error_code IS NOT NULL))),
  CHECK (state <> 'canceled' OR (completed_at IS NOT NULL AND error_code IS NOT NULL))
);
-- Counting by state while a batch is live (lesson 5), and per-batch listing in input order.
CREATE INDEX requests_batch_state_idx ON requests (batch_id, state);
CREATE UNIQUE INDEX requests_batch_line_idx ON requests (batch_id, line_number);
-- The claim: oldest first within a batch, per model, pending only.
CREATE INDEX requests_pending_idx ON requests (batch_id, model, line_number) WHERE state = 'pending';
-- Global in-flight counts per model (the limit) and lease / dead-daemon reclaim.
CREATE INDEX requests_inflight_idx ON requests (model, daemon_id) WHERE state IN ('claimed', 'processing');
CREATE INDEX requests_lease_idx ON requests (lease_expires_at) WHERE state IN ('claimed', 'processing');
-- Throughput charts and rates: completions in time order.
CREATE INDEX requests_completed_at_idx ON requests (batch_id, completed_at) WHERE completed_at IS NOT NULL;

-- Backstop for the guarded writes (lesson 1): no write may move a terminal row, except requeueing a
-- failed row (retryFailedRequests). The WHEN clause is evaluated without calling the function, so
-- ordinary updates of live rows pay nothing.
CREATE FUNCTION forbid_terminal_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'request % is %, it cannot become %', OLD.id, OLD.state, NEW.state
    USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER requests_terminal_guard BEFORE UPDATE ON requests FOR EACH ROW
  WHEN (OLD.state IN ('completed', 'canceled') OR (OLD.state = 'failed' AND NEW.state NOT IN ('failed', 'pending')))
  EXECUTE FUNCTION forbid_terminal_rewrite();

-- The hot table is updated constantly: vacuum it far more eagerly than the default 20%.
ALTER TABLE requests SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
                          fillfactor = 85);

-- What a reader sees: pending or in-flight rows of a cancelled or expired batch read as canceled
-- with the reason, without the cancel having rewritten them.
CREATE VIEW request_view AS
SELECT r.*,
       CASE
         WHEN r.state = 'pending' AND b.cancelling_at IS NOT NULL THEN 'canceled'
         WHEN r.state = 'pending' AND (b.expired_at IS NOT NULL OR b.expires_at <= now()) THEN 'canceled'
         ELSE r.state
       END AS effective_state,
       CASE
         WHEN r.state = 'pending' AND b.cancelling_at IS NOT NULL THEN 'batch_cancelled'
         WHEN r.state = 'pending' AND (b.expired_at IS NOT NULL OR b.expires_at <= now()) THEN 'batch_expired'
         ELSE r.error_code
       END AS effective_error_code
FROM requests r
JOIN batches b ON b.id = r.batch_id;

-- Idempotency of batch creation over the API (Idempotency-Key header) is batches.idempotency_key.
