-- Who goes first (issue 15, docs/decisions/0007-fair-share.md, src/db/sql/fair-share.ts).
-- Owners share each model's slots in proportion to their weight; an owner without a row here has
-- weight 1. Set with `fusillade keys set-weight --owner NAME N` or the library's setOwnerWeight.
-- Owners are the batches' owner (the API key's owner; '' for batches without one).
CREATE TABLE owner_weights (
  owner      text PRIMARY KEY,
  weight     double precision NOT NULL CHECK (weight > 0 AND weight <= 1000000),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- A live batch that would miss its deadline at its current rate is raised (src/db/sql/at-risk.ts):
-- the claim takes it first among its owner's batches and counts its owner's weight more. Set and
-- cleared by the daemons' maintenance; NULL when not at risk. Not indexed (the claim reads the live
-- batches, a handful of rows), so setting it keeps the update HOT.
ALTER TABLE batches ADD COLUMN raised_at timestamptz;
