-- Version 24: a model's limit remembers whether it came from a default (a daemon's
-- defaultModelConcurrency, --default-limit) rather than from a limit set for the model itself
-- (--model-limit, models.MODEL.limit, setModelConcurrency). A daemon writes its default over the
-- rows that came from a default when it starts (src/db/sql/queue/claim.ts, defaultModelLimitsSql):
-- before, the first default stored for a model stayed, so `fusillade run --default-limit 8` kept
-- the 16 an earlier run had seeded. Rows from before this version count as set for the model: which
-- of them were seeded is not known, and overwriting a limit set on purpose would lose it.
ALTER TABLE model_limits ADD COLUMN from_default boolean NOT NULL DEFAULT false;
