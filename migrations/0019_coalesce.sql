-- Identical requests sent once, version 19 (issue 15 item 4, docs/decisions/0008). In a batch
-- created with coalesce, a line whose model, route, method, path and body (as jsonb: canonical JSON)
-- equal an earlier line's is a follower: coalesced_into names that earlier line's request (its
-- leader). A follower stays pending, outside the claim's index, until the statement that writes its
-- leader's outcome copies it (src/db/sql/queue/complete.ts). NULL for every other request (no bytes).
ALTER TABLE requests ADD COLUMN coalesced_into uuid;

-- The claim never sees followers.
DROP INDEX requests_pending_route_idx;
CREATE INDEX requests_pending_route_idx ON requests (batch_id, model, route_id, prefix_hash, line_number)
  WHERE state = 'pending' AND coalesced_into IS NULL;
-- A leader's followers, found by the write that ends the leader: empty unless batches coalesce.
CREATE INDEX requests_coalesced_idx ON requests (coalesced_into) WHERE coalesced_into IS NOT NULL;

-- The coalescing key of a JSON body: the body as jsonb (keys sorted, duplicates resolved as
-- JSON.parse does, numbers compared by value), or NULL when PostgreSQL cannot hold it as jsonb
-- (a \u0000 escape, a lone surrogate): such a line is sent on its own.
CREATE FUNCTION coalesce_key(body text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN body::jsonb;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;
