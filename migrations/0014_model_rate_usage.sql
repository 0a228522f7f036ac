-- What each daemon started of a rate-limited model in the last minute, and its adaptive concurrency
-- (src/store/sql/rate-budget.ts publishRateUsageSql; read by the dashboard's operations page). A
-- daemon writes its own rows inside its slot rebalance's transaction, at most once a second per
-- model; the readers sum the rows of live daemons updated within the last minute, so a dead daemon's
-- row stops counting on its own. Tokens are the daemons' estimates (what counts against the limit).
CREATE TABLE model_rate_usage (
  model                text NOT NULL,
  daemon_id            uuid NOT NULL,
  requests_per_minute  integer NOT NULL CHECK (requests_per_minute >= 0),
  tokens_per_minute    bigint NOT NULL CHECK (tokens_per_minute >= 0),
  -- The daemon's AIMD concurrency for the model; NULL when the model is not adaptive.
  adaptive_concurrency integer CHECK (adaptive_concurrency > 0),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, daemon_id)
);
CREATE INDEX model_rate_usage_daemon_idx ON model_rate_usage (daemon_id);
