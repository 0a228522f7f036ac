-- Requests and tokens per minute per model, held globally (src/store/sql/rate-budget.ts; design in
-- docs/decisions/rate-limits.md). One row per model that has a rate limit configured, learned
-- from the upstream's headers, or a pause; a model without a row is limited by concurrency only.
-- The levels are the model's bucket: what is left to hand out to daemons, refilled continuously at
-- the limit in force (configured, else learned) times rate_factor, never above the burst capacity.
-- Rows are changed only while the model's model_limits row is locked (the slot rebalance's
-- transaction) or by the single-row pause statement.
CREATE TABLE model_rate_limits (
  model          text PRIMARY KEY,
  rpm            integer CHECK (rpm > 0),
  tpm            integer CHECK (tpm > 0),
  learned_rpm    integer CHECK (learned_rpm > 0),
  learned_tpm    integer CHECK (learned_tpm > 0),
  requests_level double precision NOT NULL DEFAULT 0,
  tokens_level   double precision NOT NULL DEFAULT 0,
  levels_at      timestamptz NOT NULL DEFAULT now(),
  -- Epoch ms of the newest upstream observation applied (remaining requests/tokens), so an older
  -- one arriving late does not undo it.
  observed_ms    double precision NOT NULL DEFAULT 0,
  paused_until   timestamptz,
  -- Lowered on each 429 (x0.9, at most once a second, not below 0.5) at factor_at, climbing back
  -- to 1 at 1% a second: the resume after a pause is gradual. factor_at NULL: never lowered.
  rate_factor    double precision NOT NULL DEFAULT 1 CHECK (rate_factor > 0 AND rate_factor <= 1),
  factor_at      timestamptz,
  updated_at     timestamptz NOT NULL DEFAULT now()
);
