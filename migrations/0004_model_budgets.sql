-- Per-daemon slot budgets (src/store/sql/budget.ts). Each live daemon holds `slots` of a model's
-- global limit (model_limits.concurrency) and claims within them without any global lock; the sum
-- over daemons never exceeds the limit, because budgets only grow inside a short transaction that
-- holds the model's model_limits row lock (taken a few times a second per daemon, not per request).
-- `wanted` is the daemon's demand, so the others can compute fair shares.
-- A dead or stopped daemon's rows are deleted with its leases (reclaim.ts, heartbeat.ts).
CREATE TABLE model_budgets (
  model      text NOT NULL,
  daemon_id  uuid NOT NULL,
  slots      integer NOT NULL CHECK (slots >= 0),
  wanted     integer NOT NULL CHECK (wanted >= 0),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, daemon_id)
);
CREATE INDEX model_budgets_daemon_idx ON model_budgets (daemon_id);
